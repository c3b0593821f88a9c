"""InstanceCache drops only what a change touches; only "history lost" drops everything."""

from __future__ import annotations

from metadata_fakes import PROJECT, deps, instance, port_change

from cloudmeta.api.metadata.cache import InstanceCache
from cloudmeta.api.metadata.source import Changed, Loaded
from cloudmeta.inventory.models import DEVICE_OWNER_DHCP


def _cache() -> InstanceCache:
    """vm-a1, vm-a2 on network A; vm-b1 on network B (key pair "cmt-key"); addresses cached."""
    cache = InstanceCache(ttl=600)
    for server in (
        instance("vm-a1", "192.0.2.11", "net-a"),
        instance("vm-a2", "192.0.2.12", "net-a"),
        instance("vm-b1", "198.51.100.11", "net-b", key_name="cmt-key"),
    ):
        cache.put(Loaded(server, deps(server)))
        cache.put_addresses(server.ports[0].fixed_ips[0].ip_address, [server.id])
    cache.put_addresses("192.0.2.99", [])  # nobody holds it (yet)
    return cache


def _kept(cache: InstanceCache) -> set[str]:
    return {i for i in ("vm-a1", "vm-a2", "vm-b1") if i in cache}


def test_a_new_port_on_network_a_evicts_nothing_of_b_nor_other_instances() -> None:
    cache = _cache()
    cache.invalidate([port_change("port-new", "net-a", "192.0.2.99", device_id="vm-new")])
    assert _kept(cache) == {"vm-a1", "vm-a2", "vm-b1"}
    assert cache.addresses("192.0.2.99") is None  # the negative answer for its IP is gone
    assert cache.addresses("192.0.2.11") == ["vm-a1"]
    assert cache.addresses("198.51.100.11") == ["vm-b1"]


def test_a_new_port_of_an_instance_drops_that_instance_only() -> None:
    cache = _cache()
    cache.invalidate([port_change("port-2nd", "net-b", "198.51.100.50", device_id="vm-a1")])
    assert _kept(cache) == {"vm-a2", "vm-b1"}
    assert cache.addresses("192.0.2.11") == ["vm-a1"]  # its old address did not move


def test_deleting_a_port_drops_its_holder_and_its_address() -> None:
    cache = _cache()
    cache.invalidate(
        [port_change("port-vm-a2", "net-a", "192.0.2.12", device_id="vm-a2", op="delete")]
    )
    assert _kept(cache) == {"vm-a1", "vm-b1"}
    assert cache.addresses("192.0.2.12") is None
    assert cache.addresses("192.0.2.11") == ["vm-a1"]


def test_a_dhcp_port_drops_the_instances_on_its_subnet() -> None:
    cache = _cache()
    cache.invalidate(
        [port_change("dhcp-a", "net-a", "192.0.2.2", "dhcp-x", device_owner=DEVICE_OWNER_DHCP)]
    )
    assert _kept(cache) == {"vm-b1"}  # their subnet meta dhcp_server changed; B's did not


def test_a_key_pair_created_under_a_referenced_name_drops_that_server() -> None:
    cache = _cache()
    touched = {"project_ids": [PROJECT], "names": ["cmt-key"]}
    cache.invalidate([Changed("keypair", "kp-new", touched)])
    assert _kept(cache) == {"vm-a1", "vm-a2"}
    cache = _cache()
    cache.invalidate([Changed("keypair", "kp-other", {"project_ids": [PROJECT], "names": ["x"]})])
    assert _kept(cache) == {"vm-a1", "vm-a2", "vm-b1"}


def test_subnet_network_router_project_changes_drop_only_their_holders() -> None:
    cache = _cache()
    cache.invalidate(
        [
            Changed("subnet", "net-c-v4", {"network_ids": ["net-c"]}),
            Changed("network", "net-c", {}),
            Changed("router", "r-1", {"network_ids": ["net-a"]}),
            Changed("project", "p-1", {}),
        ]
    )
    assert _kept(cache) == {"vm-a1", "vm-a2", "vm-b1"}
    cache.invalidate([Changed("network", "net-b", {})])  # e.g. its MTU changed
    assert _kept(cache) == {"vm-a1", "vm-a2"}


def test_a_server_change_drops_that_server_and_its_addresses() -> None:
    cache = _cache()
    cache.invalidate([Changed("server", "vm-a1", {"ip_addresses": ["192.0.2.11"]})])
    assert _kept(cache) == {"vm-a2", "vm-b1"}
    assert cache.addresses("192.0.2.11") is None
    assert cache.addresses("192.0.2.12") == ["vm-a2"]


def test_unknown_touches_fall_back_to_dropping_everything() -> None:
    cache = _cache()
    cache.invalidate([Changed("port", "port-old-record", None)])  # a record from before 0003
    assert len(cache) == 0 and cache.addresses("192.0.2.12") is None


def test_history_lost_drops_everything() -> None:
    cache = _cache()
    cache.invalidate(None)
    assert len(cache) == 0 and cache.addresses("192.0.2.11") is None
