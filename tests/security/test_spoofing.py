"""L2 spoofing (issue 8): an instance that takes its neighbour's IP, or IP and MAC, on the same
bridge gets nothing of the neighbour's, in every proxy mode; the neighbour keeps its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from harness import META_IP, Chain, curl, start_chain, uuid_of
from scene import Member, build_scene

from cloudmeta import linux
from cloudmeta.config import ProxyMode
from support.report import record

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    made = await start_chain(make_config, request.param)
    try:
        yield made
    finally:
        await made.close()


async def take_over(me: Member, victim: Member, *, mac: str | None) -> None:
    """``me`` puts the victim's address (and MAC) on its interface instead of its own."""
    ns = me.instance.namespace
    await linux.delete_address(ns, "eth0", f"{me.instance.ip}/24")
    if mac:
        await linux.set_link(ns, "eth0", mac=mac)
    await linux.add_address(ns, "eth0", f"{victim.instance.ip}/24")
    await linux.add_route(ns, f"{META_IP}/32", via="192.0.2.1", dev="eth0")


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_spoofed_ip_and_mac_get_nothing(chain: Chain) -> None:
    members = await build_scene(chain)
    me, victim = members[0], members[1]  # both on network A's bridge
    assert me.network_id == victim.network_id
    victim_mac = await linux.list_links(victim.instance.namespace)
    mac = next(link.mac for link in victim_mac if link.name == "eth0")
    tries = leaks = 0
    for spoof_mac in (None, mac):
        await take_over(me, victim, mac=spoof_mac)
        for _ in range(3):
            status, body = await curl(me.instance.namespace, max_time=2)
            tries += 1
            leaks += victim.instance.server_id in body
            assert status in (0, 404) and victim.instance.server_id not in body, (status, body)
        status, body = await curl(victim.instance.namespace, max_time=10)
        assert (status, uuid_of(body)) == (200, victim.instance.server_id)
    record("attack", f"{chain.config.metadata_proxy_mode}:l2-spoof", tries=tries, leaks=leaks)
