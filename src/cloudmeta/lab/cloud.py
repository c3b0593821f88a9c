"""The lab's cloud (devstack's job): the services, a demo project, networks, instances.

Everything goes through the admin API, as a user of the cloud would; only the parts a real
cloud gets from its hypervisor (plugging an instance's port into its network's bridge, booting
it) are done here directly. Every step records what it makes in :mod:`~cloudmeta.lab.state`
first, so :func:`down` can undo a lab that crashed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.agent.localport import localport_namespace
from cloudmeta.config import Config
from cloudmeta.dhcp.driver import pid_dir
from cloudmeta.dhcp.render import DnsmasqFiles
from cloudmeta.l3.model import bridge_port_name, router_namespace
from cloudmeta.lab import instance, nodes, repo
from cloudmeta.lab import ipv6 as ipv6_lab
from cloudmeta.lab.cloudcfg import Datasource, lab_user_data
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.state import (
    LabInstance,
    LabNetwork,
    LabNode,
    LabState,
    edit_state,
    lab_dir,
    load_state,
    network_lock,
    refresh,
)
from cloudmeta.lab.supervise import all_in_one_log, all_in_one_pid_file, spawn_all_in_one
from cloudmeta.lab.vm import configdrive
from cloudmeta.lab.vm import driver as vm_driver
from cloudmeta.lab.vm.runtime import VmOptions
from cloudmeta.linux.cleanup import cleanup
from cloudmeta.linux.names import bridge_name
from cloudmeta.linux.process import cmdline, pid_alive, read_pid, stop_pid
from cloudmeta.linux.qemu import create_tap

__all__ = [
    "DEMO_NETWORKS",
    "Progress",
    "aio_config",
    "boot_instance",
    "build_cloud",
    "down",
    "ensure_all_in_one",
    "instance_paths",
    "instance_row",
    "keep_logs",
    "kill_instance",
    "lab_exists",
    "lab_running",
    "last_step",
    "wait_all_in_one",
    "wait_booted",
]

Progress = Callable[[str], None]
# name -> (cidr, behind a router)
DEMO_NETWORKS = {"isolated": ("192.0.2.0/24", False), "routed": ("198.51.100.0/24", True)}
_INSTANCE_IFACE = "eth0"


def bridge_namespace(config: Config) -> str:
    """Where the lab's bridges live: the configured namespace, else ``<prefix>fabric``, so the
    DHCP agent can apply port security (MAC/IP anti-spoofing) there."""
    return config.bridge_namespace or f"{config.namespace_prefix}fabric"


def _fabric(config: Config, host: str | None) -> str:
    """The bridge namespace an instance of ``host`` is plugged into (the lab's own fabric on a
    one-host lab)."""
    return nodes.node_fabric(config, host) if host else bridge_namespace(config)


def _lab_nodes(state: LabState) -> list[LabNode]:
    """A multi-node lab's network and compute nodes (none on a one-host lab)."""
    return [n for n in state.nodes.values() if n.role != nodes.CONTROLLER]


def compute_nodes(state: LabState) -> list[str]:
    return [n.name for n in _lab_nodes(state) if n.role == "compute"]


def lab_running(state: LabState) -> bool:
    """Whether the ``lab up`` that made ``state`` still runs (otherwise the lab is debris)."""
    pid = state.owner_pid
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return False
    return " lab up" in cmdline(pid)  # not a recycled pid


def instance_paths(config: Config, name: str) -> instance.InstancePaths:
    return instance.InstancePaths(lab_dir(config) / "instances" / name)


async def _api_up(client: AdminClient) -> bool:
    try:
        await client.revision()
    except (AdminError, OSError):
        return False
    return True


def aio_config(config: Config) -> Config:
    """The all-in-one's configuration: the agents put the bridges where the lab plugs its
    instances (port security needs it)."""
    return config.model_copy(update={"bridge_namespace": bridge_namespace(config)})


async def ensure_all_in_one(
    config: Config, client: AdminClient, state: LabState, progress: Progress
) -> subprocess.Popen[bytes] | None:
    """Start ``cloudmeta all-in-one`` (pid file and log in the lab dir) unless the API answers;
    the process we started, for :func:`~cloudmeta.lab.supervise.supervise_all_in_one`."""
    if await _api_up(client):
        progress("services: cloudmeta already answers at " + client.url)
        return None
    proc = spawn_all_in_one(aio_config(config), state)
    progress(
        f"services: started cloudmeta all-in-one (pid {proc.pid}, log {all_in_one_log(config)})"
    )
    await wait_all_in_one(config, client, proc)
    return proc


async def wait_all_in_one(
    config: Config, client: AdminClient, proc: subprocess.Popen[bytes]
) -> None:
    """Until the all-in-one's admin API answers (60 s at most)."""
    log = all_in_one_log(config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"cloudmeta all-in-one exited with {proc.returncode}; see {log}")
        if await _api_up(client):
            return
        await asyncio.sleep(0.1)
    raise LabError(f"cloudmeta all-in-one did not answer within 60 s; see {log}")


def demo_network_names(ipv6: bool) -> list[str]:
    """The lab's networks in the order ``--instances N`` fills them."""
    return [*DEMO_NETWORKS, *([ipv6_lab.IPV6_ONLY[0]] if ipv6 else [])]


async def build_cloud(
    config: Config, client: AdminClient, state: LabState, progress: Progress, ipv6: bool = False
) -> None:
    """Demo project, key pair, the two networks, the router, the apt repository on each; with
    ``ipv6`` both networks are dual-stack and a third one has IPv6 only."""
    project = await client.create_project("lab-demo")
    with edit_state(config, state) as record:
        record.project_id = project["id"]
    keypair = await client.create_keypair("lab-key", project_id=project["id"])
    with edit_state(config, state) as record:
        record.keypair_id = keypair["id"]
    progress(f"project lab-demo {project['id']}, key pair lab-key")
    for name, (cidr, routed) in DEMO_NETWORKS.items():
        network = await client.create_network(name, project_id=project["id"])
        with edit_state(config, state) as record:
            record.networks[network["id"]] = LabNetwork(id=network["id"], name=name, cidr=cidr)
        if state.nodes:
            await nodes.ensure_overlay(config, _lab_nodes(state), network["id"])
        subnet = await client.create_subnet(network["id"], cidr, name=f"{name}-subnet")
        with edit_state(config, state) as record:
            record.networks[network["id"]].subnet_id = subnet["id"]
        v6 = ipv6_lab.V6_SUBNETS.get(name) if ipv6 else None
        subnet6 = None
        if v6 is not None:
            subnet6 = await ipv6_lab.add_subnet(config, client, state, network["id"], name, v6)
        if routed:
            router = await client.create_router("lab-router", project_id=project["id"])
            with edit_state(config, state) as record:
                record.router_id = router["id"]
            await client.add_router_interface(router["id"], subnet["id"])
            if subnet6 is not None:
                await client.add_router_interface(router["id"], subnet6)
        shown = cidr + (f" + {v6.cidr} {v6.mode}" if v6 else "")
        progress(f"network {name} {shown} ({'behind lab-router' if routed else 'no router'})")
    if ipv6:
        name, v6 = ipv6_lab.IPV6_ONLY
        network = await client.create_network(name, project_id=project["id"])
        with edit_state(config, state) as record:
            record.networks[network["id"]] = LabNetwork(
                id=network["id"], name=name, cidr=v6.cidr, ipv4=False
            )
        if state.nodes:
            await nodes.ensure_overlay(config, _lab_nodes(state), network["id"])
        await ipv6_lab.add_subnet(config, client, state, network["id"], name, v6)
        progress(f"network {name} {v6.cidr} {v6.mode} (IPv6 only, no router)")
    # One package tree for every network: build it before serving it on each in parallel
    # (two builds at once raced on the same files: "file changed as we read it").
    await repo.build_repository(lab_dir(config) / "repo")
    await asyncio.gather(*(ensure_repo(config, client, state, n) for n in list(state.networks)))
    progress("apt repository cmt-hello served on each network")
    if ipv6:
        nets6 = [n for n in state.networks.values() if n.subnet6_id and n.repo_namespace]
        answered = await asyncio.gather(
            *(ipv6_lab.wait_metadata_path(n.repo_namespace or "") for n in nets6)
        )
        missing = [n.name for n, ok in zip(nets6, answered, strict=True) if not ok]
        progress(
            "fe80::a9fe:a9fe answers on every IPv6 network"
            if not missing
            else f"fe80::a9fe:a9fe does not answer on {', '.join(missing)} (IPv4 only there)"
        )


async def ensure_repo(config: Config, client: AdminClient, state: LabState, network_id: str) -> str:
    """The lab repository's URL on ``network_id``, serving it there first if needed.

    One process at a time per network (``lab up`` and any ``lab boot`` may ask at once): the
    second one finds the first one's server instead of plugging a second port into the same
    namespace. A server that died is replaced, with what it left removed first.
    """
    async with network_lock(config, network_id):
        with edit_state(config, state):
            pass  # what the others recorded meanwhile
        net = state.networks.get(network_id)
        if net is not None and net.repo_ip and _repo_alive(net):
            return f"http://{ipv6_lab.url_host(net.repo_ip)}/"
        name = net.name if net is not None else (await client.get_network(network_id))["name"]
        if net is not None and (net.repo_port_id or net.repo_namespace):
            await _remove_repo(config, client, state, net)
        repo_dir = await repo.build_repository(lab_dir(config) / "repo")
        port = await client.create_port(
            network_id, name="lab-repo", device_owner="lab:repo", device_id="lab-repo"
        )
        ip = port["fixed_ips"][0]["ip_address"]
        namespace = f"{config.namespace_prefix}lab-repo-{network_id[:8]}"
        link = bridge_port_name(config.device_prefix, port["id"])
        with edit_state(config, state) as record:
            found = record.networks.setdefault(
                network_id, LabNetwork(id=network_id, name=name, cidr="", owned=False)
            )
            found.repo_port_id, found.repo_ip = port["id"], ip
            found.repo_namespace, found.repo_link, found.repo_pid = namespace, link, None
        subnet = await client.get_subnet(port["fixed_ips"][0]["subnet_id"])
        prefixlen = ipaddress.ip_network(subnet["cidr"]).prefixlen
        # On a multi-node lab the repository lives on the first compute node.
        host = next(iter(compute_nodes(state)), None)
        await _plug(config, state, namespace, link, network_id, port["mac_address"], host)
        # No DAD wait on an IPv6-only network (the address is the port's, port security
        # guards it): the server binds it at once.
        await linux.add_address(namespace, _INSTANCE_IFACE, f"{ip}/{prefixlen}", nodad=True)
        pid = repo.start_server(
            namespace, ip, repo_dir, lab_dir(config) / f"repo-{network_id[:8]}.log"
        )
        with edit_state(config, state) as record:
            record.networks[network_id].repo_pid = pid
        await repo.wait_serving(namespace, ipv6_lab.url_host(ip))
        return f"http://{ipv6_lab.url_host(ip)}/"


def _repo_alive(net: LabNetwork) -> bool:
    return bool(net.repo_pid) and "http.server" in cmdline(net.repo_pid or 0)


async def _remove_repo(
    config: Config, client: AdminClient | None, state: LabState, net: LabNetwork
) -> None:
    """What a dead repository server left on ``net``: namespace, link, port, record."""
    await cleanup(
        namespaces=[net.repo_namespace] if net.repo_namespace else [],
        links=[net.repo_link] if net.repo_link else [],
        links_namespace=_fabric(config, next(iter(compute_nodes(state)), None)),
    )
    if client is not None and net.repo_port_id:
        with contextlib.suppress(AdminError):
            await client.delete_port(net.repo_port_id)
    with edit_state(config, state) as record:
        found = record.networks.get(net.id)
        if found is not None:
            found.repo_port_id = found.repo_ip = found.repo_namespace = found.repo_link = None
            found.repo_pid = None


async def _plug(
    config: Config,
    state: LabState,
    namespace: str,
    link: str,
    network_id: str,
    mac: str,
    host: str | None = None,
) -> None:
    """A fresh ``namespace`` whose ``eth0`` (``mac``) is a port on the network's bridge (on
    compute node ``host`` of a multi-node lab, where the overlay reaches that bridge).

    A namespace of that name that exists already belongs to nothing the record lists (a lab
    that lost it, a half-made boot): it is removed first, with whatever still runs inside, so
    its stale ``eth0`` is not taken for the new port.
    """
    bridge = bridge_name(config.device_prefix, network_id)
    with edit_state(config, state) as record:
        for name, names in ((namespace, record.namespaces), (bridge, record.bridges)):
            if name not in names:
                names.append(name)
    fabric = _fabric(config, host)
    if linux.namespace_exists(namespace):
        await cleanup(namespaces=[namespace], links=[link], links_namespace=fabric)
    if state.nodes:
        await nodes.ensure_overlay(config, _lab_nodes(state), network_id)
    await linux.create_bridge(fabric, bridge)
    linux.create_namespace(namespace)
    await linux.set_link(namespace, "lo", up=True)
    await linux.plug_veth(
        namespace,
        _INSTANCE_IFACE,
        mac=mac,
        host_ifname=link,
        bridge=bridge,
        bridge_namespace=fabric,
    )


async def boot_instance(
    config: Config,
    client: AdminClient,
    state: LabState,
    name: str,
    network_id: str,
    *,
    fixed_ip: str | None = None,
    user_data: str | None = None,
    properties: dict[str, str] | None = None,
    datasource: Datasource = Datasource.OPENSTACK,
    vm: VmOptions | None = None,
    config_drive: bool = False,
    host: str | None = None,
) -> LabInstance:
    """Create the server through the API, plug its port, start its boot (do not wait).

    With ``vm`` the instance is a QEMU guest on a tap of the network's bridge; it gets a config
    drive (a CD-ROM) when ``config_drive`` asks for one or ``force_config_drive`` is set. On a
    multi-node lab it is placed on compute node ``host`` (default: the first one)."""
    with edit_state(config, state):
        pass  # what the others recorded meanwhile
    if name in state.instances:
        raise LabError(f"lab instance {name} exists: `cloudmeta lab kill {name}` first")
    host = _placement(state, host)
    if user_data is None:
        repo_url = await ensure_repo(config, client, state, network_id)
        user_data = lab_user_data(f"{name}-lab", secrets.token_urlsafe(12), repo_url)
    net = state.networks.get(network_id)
    nic: dict[str, str] = {"network_id": network_id}
    if fixed_ip:
        nic["fixed_ip"] = fixed_ip
    fields: dict[str, Any] = {
        "user_data": base64.b64encode(user_data.encode()).decode(),
        "metadata": properties or {},
    }
    if state.project_id:
        fields["project_id"] = state.project_id
        fields["key_name"] = "lab-key"
    if config_drive:
        fields["config_drive"] = True
    server = await client.create_server(name, [nic], **fields)
    ports = await client.list_ports(device_id=server["id"])
    if not ports:
        raise LabError(f"server {name} got no port on network {network_id}")
    port = ports[0]
    ip6 = next((f["ip_address"] for f in port["fixed_ips"] if ":" in f["ip_address"]), None)
    inst = LabInstance(
        name=name,
        server_id=server["id"],
        network_id=network_id,
        network=net.name if net else network_id,
        namespace="" if vm else f"{config.namespace_prefix}vm-{name}",
        link=bridge_port_name(config.device_prefix, port["id"]),
        port_id=port["id"],
        ip=port["fixed_ips"][0]["ip_address"],
        ip6=ip6,
        mac=port["mac_address"],
        datasource=datasource.value,
        vm=vm is not None,
        host=host,
    )
    with edit_state(config, state) as record:
        taken = name in record.instances
        if not taken:
            record.instances[name] = inst
    if taken:  # another `lab boot` of the same name won the race
        with contextlib.suppress(AdminError):
            await client.delete_server(server["id"])
        raise LabError(f"lab instance {name} exists: `cloudmeta lab kill {name}` first")
    if vm is not None:
        drive = await configdrive.config_drive_for(
            config, server, configdrive.drive_path(config, name)
        )
        await _boot_vm(config, state, inst, replace(vm, cdrom=drive) if drive else vm)
        return inst
    await _plug(config, state, inst.namespace, inst.link, network_id, port["mac_address"], host)
    served = [port["mac_address"], *(f["ip_address"] for f in port["fixed_ips"])]
    await _wait_port_served(config, state, network_id, served, host)
    paths = instance_paths(config, name)
    await asyncio.to_thread(
        functools.partial(
            instance.start,
            paths,
            inst.namespace,
            _INSTANCE_IFACE,
            Datasource(inst.datasource),
            inst.server_id,
            ipv4=net.ipv4 if net else True,
            ipv6_mode=(net.ipv6_mode if net else None) if ip6 else None,
        )
    )
    return inst


def _placement(state: LabState, host: str | None) -> str | None:
    """The compute node an instance goes to (None on a one-host lab), or why not."""
    computes = compute_nodes(state)
    if not state.nodes:
        if host:
            raise LabError(f"--host {host}: this lab has one host (`lab up --compute-nodes N`)")
        return None
    host = host or (computes[0] if computes else None)
    node = state.nodes.get(host or "")
    if node is None or node.role != "compute" or node.dead:
        raise LabError(f"--host {host}: not a live compute node (they are: {', '.join(computes)})")
    return host


async def _boot_vm(config: Config, state: LabState, inst: LabInstance, vm: VmOptions) -> None:
    """Plug a tap ``tap<port id>`` on the network's bridge (port security applies to it as to a
    namespace instance's veth) and start QEMU with the port's MAC on it."""
    bridge = bridge_name(config.device_prefix, inst.network_id)
    with edit_state(config, state) as record:
        if bridge not in record.bridges:
            record.bridges.append(bridge)
    fabric = _fabric(config, inst.host)
    if state.nodes:
        await nodes.ensure_overlay(config, _lab_nodes(state), inst.network_id)
    await linux.create_bridge(fabric, bridge)
    await create_tap(fabric, inst.link, bridge=bridge)
    assert inst.mac is not None
    await _wait_port_served(config, state, inst.network_id, [inst.mac], inst.host)
    await vm_driver.start(
        instance_paths(config, inst.name).dir,
        name=inst.name,
        server_id=inst.server_id,
        image=vm.image,
        accel=vm.accel,
        namespace=fabric,
        tap=inst.link,
        mac=inst.mac,
        memory_mb=vm.memory_mb,
        cdrom=vm.cdrom,
        ec2=inst.datasource == Datasource.EC2.value,
    )


async def wait_booted(config: Config, inst: LabInstance, timeout: float | None = None) -> str:  # noqa: ASYNC109
    """``ok``/``failed`` once the instance (namespace or VM) finished booting."""
    paths = instance_paths(config, inst.name)
    if inst.vm:
        return await vm_driver.wait_booted(paths.dir, timeout or 480.0)
    return await instance.wait_booted(paths, timeout or 180.0)


def last_step(config: Config, inst: LabInstance) -> str | None:
    paths = instance_paths(config, inst.name)
    return vm_driver.last_step(paths.dir) if inst.vm else instance.last_step(paths)


async def _wait_port_served(
    config: Config,
    state: LabState,
    network_id: str,
    names: list[str],
    host: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Nova's wait for ``network-vif-plugged``: boot once a dnsmasq of the network lists the
    port (and, on compute node ``host``, its metadata localport is there). ``names``: its MAC
    (the hosts file) and addresses (the addn_hosts file: an IPv6-only SLAAC port is not in
    the hosts file, dnsmasq hands it nothing).

    Booting earlier makes the instance's first DHCPDISCOVER go unanswered. Only the DHCP agents
    of this lab's state dirs are watched; after ``timeout`` the boot goes on (dhclient retries).
    """
    roots = [config.state_path]
    if state.nodes:
        roots = [nodes.node_dir(config, n.name) for n in _lab_nodes(state) if n.role == "network"]
    found = [DnsmasqFiles(r / "dhcp" / network_id) for r in roots if (r / "dhcp").is_dir()]
    files = [f.host for f in found] + [f.addn_hosts for f in found]
    wanted = [n.lower() for n in names]
    localport = None
    if host and state.localports:
        localport = localport_namespace(nodes.node_prefix(config, host), network_id)
    deadline = time.monotonic() + timeout
    while files and time.monotonic() < deadline:
        listed = False
        for hosts in files:
            with contextlib.suppress(OSError):
                text = hosts.read_text().lower()
                listed = listed or any(_listed(n, text) for n in wanted)
        if listed and (localport is None or linux.namespace_exists(localport)):
            return
        await asyncio.sleep(0.1)


def _listed(name: str, text: str) -> bool:
    """``name`` (a MAC, an address) as a whole field of a hosts or addn_hosts line."""
    return any(name in re.split(r"[\s,\[\]]+", line) for line in text.splitlines())


async def _path_of(client: AdminClient, inst: LabInstance, hop: str) -> str:
    """``dhcp`` when ``hop`` is the network's DHCP port, else ``router``."""
    ports = await client.list_ports(network_id=inst.network_id, ip_address=hop)
    return "dhcp" if "network:dhcp" in {p["device_owner"] for p in ports} else "router"


async def metadata_next_hop(
    client: AdminClient, inst: LabInstance
) -> tuple[str | None, str, str | None]:
    """Where the instance's packets to 169.254.169.254 go, which path that is, and why there
    is none when there is none."""
    try:
        routes = await linux.list_routes(inst.namespace)
    except linux.LinuxError as exc:
        return None, "-", f"cannot read its routes: {exc}"
    by_dest = {r.destination: r.via for r in routes}
    if "169.254.169.254/32" in by_dest and by_dest["169.254.169.254/32"] is None:
        return "on-link", "localport", None  # answered on its own compute node
    hop = by_dest.get("169.254.169.254/32") or by_dest.get("default")
    if hop is None:
        shown = ", ".join(f"{r.destination} via {r.via}" for r in routes) or "none"
        return None, "-", f"no route to 169.254.169.254 (its routes: {shown})"
    return hop, await _path_of(client, inst, hop), None


async def instance_row(client: AdminClient, config: Config, inst: LabInstance) -> dict[str, Any]:
    """One line of ``lab status`` (the JSON fields of the issue), for either kind of instance:
    a namespace instance is read from its files and routes, a VM from its boot report."""
    facts: instance.InstanceFacts | vm_driver.VmFacts
    if inst.vm:
        facts = vm_driver.facts(instance_paths(config, inst.name).dir, repo.PACKAGE)
        hop, why = facts.metadata_next_hop, None
        path = "-" if hop is None else await _path_of(client, inst, hop)
    else:
        facts = await instance.facts(instance_paths(config, inst.name), repo.PACKAGE)
        hop, path, why = await metadata_next_hop(client, inst)
    v6: dict[str, Any] = {}
    if inst.ip6 is not None and not inst.vm:
        v6 = await ipv6_lab.status_fields(client, inst, _INSTANCE_IFACE)
        log = instance_paths(config, inst.name).upper / "var/log/cloud-init.log"
        with contextlib.suppress(OSError):
            v6["metadata_url"] = ipv6_lab.metadata_source(log.read_text(errors="replace"))
        if inst.ip == inst.ip6:  # IPv6 only: no route to 169.254.169.254 is no fault
            hop, path, why = None, "-", None
    return {
        "name": inst.name,
        "server_id": inst.server_id,
        "host": inst.host,
        "network": inst.network,
        "ip": inst.ip,
        "metadata_next_hop": hop,
        "path": path,
        "hostname": facts.hostname,
        "password_set": facts.password_set,
        "package": facts.package,
        "result": facts.result,
        "boot_seconds": facts.boot_seconds,
        "errors": [*facts.errors, *([why] if why else []), *v6.pop("errors", [])],
        **v6,
    }


def keep_logs(config: Config, name: str) -> Path:
    """Copy what tells why instance ``name`` failed (its console, cloud-init's and apt's logs)
    to ``<state_path>/lab-logs/<time>-<name>/``, which ``lab down`` leaves; that dir."""
    paths = instance_paths(config, name)
    dest = config.state_path / "lab-logs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{name}"
    dest.mkdir(parents=True, exist_ok=True)
    sources = [paths.console, paths.steps, paths.dir / "boot.log", paths.user_data]
    logs = paths.upper / "var" / "log"
    sources += [logs / "cloud-init.log", logs / "cloud-init-output.log"]
    sources += sorted((logs / "apt").glob("*.log")) if (logs / "apt").is_dir() else []
    sources.append(paths.upper / "var/lib/cloud/data/result.json")
    for source in sources:
        if source.is_file():
            shutil.copy2(source, dest / source.name)
    # The instance's addresses and routes as its own processes see them (its pid 1's network).
    pid = instance.read_pid(paths)
    if pid is not None:
        views = [["ip", "address"], ["ip", "route"], ["ip", "neigh"]]
        with (dest / "network.txt").open("w") as out:
            for argv in views:
                out.write(f"$ {' '.join(argv)}\n")
                out.flush()
                subprocess.run(
                    ["nsenter", "-t", str(pid), "--net", *argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=10,
                    check=False,
                )
    return dest


async def kill_instance(
    config: Config, client: AdminClient | None, state: LabState, name: str
) -> None:
    """Stop one instance, unplug it, delete its server; idempotent."""
    inst = state.instances.get(name)
    if inst is not None and inst.vm:
        await vm_driver.kill(instance_paths(config, name).dir)
        configdrive.drive_path(config, name).unlink(missing_ok=True)
    await instance.kill(instance_paths(config, name))
    namespace = inst.namespace if inst else f"{config.namespace_prefix}vm-{name}"
    await cleanup(
        namespaces=[namespace] if namespace else [],
        links=[inst.link] if inst else [],
        links_namespace=_fabric(config, inst.host if inst else None),
    )
    if inst is not None and client is not None:
        with contextlib.suppress(AdminError):
            await client.delete_server(inst.server_id)
    with edit_state(config, state) as record:
        if namespace in record.namespaces:
            record.namespaces.remove(namespace)
        record.instances.pop(name, None)


async def down(config: Config, state: LabState, client: AdminClient | None) -> None:
    """Remove everything the lab made (idempotent; works from a half-written state).

    A ``lab up`` that still runs is asked to tear its lab down first (SIGTERM), then what the
    record lists goes, and the lab dir (with the record) goes last: until everything is gone
    there is a lab to remove. When the lab started the all-in-one, everything that all-in-one
    made goes with it, whoever created the network (``cloudmeta network create`` included):
    every ``qdhcp-``/``qrouter-`` namespace of the lab's prefix and every process it watched
    (dnsmasq, proxies). A network made with the CLI is kept in the inventory. With a shared
    all-in-one, only the lab's own networks and router are undone (by its agents).
    """
    await _stop_owner(config, state)
    current = load_state(config)
    if current is not None:
        refresh(state, current)
    instance_dirs = lab_dir(config) / "instances"
    names = set(state.instances) | (
        {p.name for p in instance_dirs.iterdir()} if instance_dirs.is_dir() else set()
    )
    for name in sorted(names):
        await kill_instance(config, client, state, name)
    if state.nodes or state.database:
        await _down_nodes(config, state)
        return
    aio_ours = _all_in_one_was_ours(config, state)
    ours = [n.id for n in state.networks.values() if n.owned or aio_ours]
    agent_namespaces = [f"{config.namespace_prefix}qdhcp-{n}" for n in ours]
    if state.router_id:
        agent_namespaces.append(router_namespace(config.namespace_prefix, state.router_id))
    if client is not None and await _api_up(client):
        await _delete_resources(client, state)
        if not aio_ours:
            # The shared agents undo their part (dnsmasq, proxies, namespaces, files) on the
            # deletions; what they have not undone in time is removed below.
            await _wait_gone(agent_namespaces, timeout=5.0)
    pid_dirs: list[Path] = []
    if aio_ours:
        aio = _running_all_in_one(config, state)
        if aio is not None:
            await stop_pid(aio, timeout=10)
        # What the stopped all-in-one's agents served, on any network: their namespaces (the
        # DHCP agent takes every `<prefix>qdhcp-*` for its own, too) and watched processes.
        stems = (f"{config.namespace_prefix}qdhcp-", f"{config.namespace_prefix}qrouter-")
        agent_namespaces += [ns for stem in stems for ns in linux.list_namespaces(stem)]
        pid_dirs.append(pid_dir(config))
    repo_namespaces = [n.repo_namespace for n in state.networks.values() if n.repo_namespace]
    links = [n.repo_link for n in state.networks.values() if n.repo_link]
    # A network's bridge exists once its DHCP port is plugged, before the lab plugs anything.
    bridges = {bridge_name(config.device_prefix, n) for n in ours}
    foreign = {bridge_name(config.device_prefix, n) for n in state.networks} - bridges
    fabric = bridge_namespace(config)
    for found in pid_dirs:
        await cleanup(pid_dir=found)
    await cleanup(
        namespaces=sorted({*state.namespaces, *repo_namespaces, *agent_namespaces}),
        links=[*links, *sorted((bridges | set(state.bridges)) - foreign)],
        links_namespace=fabric,
    )
    if aio_ours:
        await cleanup(namespaces=[fabric])  # the lab's own fabric, with anything left in it
        await asyncio.to_thread(_remove_all_agent_files, config)
    else:
        await asyncio.to_thread(_remove_agent_files, config, [*ours, state.router_id])
    await asyncio.to_thread(shutil.rmtree, lab_dir(config), True)


async def _down_nodes(config: Config, state: LabState) -> None:
    """A multi-node lab goes whole: every node's agents and namespaces, the API hosts, the
    underlay, the repository servers, the database, the lab dir (node state dirs in it)."""
    await nodes.down_nodes(config, state)
    repo_namespaces = [n.repo_namespace for n in state.networks.values() if n.repo_namespace]
    await cleanup(namespaces=sorted({*state.namespaces, *repo_namespaces}))
    await asyncio.to_thread(shutil.rmtree, lab_dir(config), True)


def lab_exists(config: Config) -> bool:
    """Whether there is anything of a lab here: its dir (record, pid files) or its fabric."""
    return lab_dir(config).exists() or linux.namespace_exists(bridge_namespace(config))


async def _stop_owner(config: Config, state: LabState) -> None:
    """A ``lab up`` that still runs (another process) tears its own lab down on SIGTERM."""
    if not lab_running(state) or state.owner_pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.owner_pid, signal.SIGTERM)
    await _wait_pid_gone(state.owner_pid, timeout=120)


async def _wait_pid_gone(pid: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until ``pid`` (not our child) has exited: its pidfd turns readable then, no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        async with asyncio.timeout(timeout):
            await gone.wait()
    except TimeoutError:
        raise LabError(f"`lab up` (pid {pid}) did not end within {timeout:g} s") from None
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _all_in_one_was_ours(config: Config, state: LabState) -> bool:
    """Whether the lab started the all-in-one (running or not): then the agents' debris is ours."""
    return bool(state.all_in_one_pid) or all_in_one_pid_file(config).exists()


def _running_all_in_one(config: Config, state: LabState) -> int | None:
    """The pid of the all-in-one this lab started, if it still runs (not a recycled pid)."""
    for pid in (state.all_in_one_pid, read_pid(all_in_one_pid_file(config))):
        if pid and pid_alive(pid) and "all-in-one" in cmdline(pid):
            return pid
    return None


async def _wait_gone(namespaces: list[str], timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(namespaces) & set(linux.list_namespaces()):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


def _remove_all_agent_files(config: Config) -> None:
    """Every file the lab's own (stopped) agents kept: dnsmasq's and the pid files."""
    shutil.rmtree(config.state_path / "dhcp", ignore_errors=True)
    shutil.rmtree(pid_dir(config), ignore_errors=True)


def _remove_agent_files(config: Config, ids: list[str | None]) -> None:
    """Files an agent stopped too early left for the lab's networks and router."""
    for found in filter(None, ids):
        shutil.rmtree(config.state_path / "dhcp" / found, ignore_errors=True)
        for pid_file in (config.state_path / "external" / "pids").glob(f"*/{found}.pid"):
            pid_file.unlink(missing_ok=True)


async def _delete_resources(client: AdminClient, state: LabState) -> None:
    """Best effort: the API objects of the lab, so a shared all-in-one is left as it was."""
    calls: list[Any] = []
    for net in state.networks.values():
        if net.repo_port_id:
            calls.append(client.delete_port(net.repo_port_id))
    if state.router_id:
        for net in state.networks.values():
            for subnet_id in {net.subnet_id, net.subnet6_id} - {None}:
                assert subnet_id is not None
                calls.append(client.remove_router_interface(state.router_id, subnet_id))
    for call in calls:
        with contextlib.suppress(AdminError):
            await call
    deletions: list[Any] = []
    if state.router_id:
        deletions.append(client.delete_router(state.router_id))
    deletions += [client.delete_network(n.id) for n in state.networks.values() if n.owned]
    if state.keypair_id:
        deletions.append(client.delete_keypair(state.keypair_id))
    if state.project_id:
        deletions.append(client.delete_project(state.project_id))
    for call in deletions:
        with contextlib.suppress(AdminError):
            await call
