"""dhclient in a namespace against a real dnsmasq: option 121 lands, host files stay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from linux_scratch import Scratch

from cloudmeta import linux

pytestmark = pytest.mark.root

RESOLV = Path("/etc/resolv.conf")


def _read(path: Path) -> bytes:
    return path.read_bytes()


# Both loops: the services run on uvloop (tests/linux/conftest.py), the tools on plain asyncio.
@pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])
async def test_dhclient_gets_the_metadata_host_route_and_leaves_resolv_conf(
    scratch: Scratch,
) -> None:
    resolv_before = _read(RESOLV)
    bridge = scratch.link("br")
    await linux.create_bridge(None, bridge)
    server, vm = scratch.namespace("dhcp"), scratch.namespace("vm")
    await linux.plug_veth(
        server, "tap0", mac="fa:16:3e:00:02:02", host_ifname=scratch.link("d"), bridge=bridge
    )
    await linux.add_address(server, "tap0", "192.0.2.2/24")
    await linux.plug_veth(
        vm, "eth0", mac="fa:16:3e:00:02:10", host_ifname=scratch.link("vm"), bridge=bridge
    )
    uuid = f"{scratch.tag}-net"
    files = scratch.pid_dir / uuid
    files.mkdir(parents=True)
    dnsmasq = linux.ProcessManager(
        uuid,
        [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--interface=tap0", "--bind-interfaces", "--except-interface=lo",
            "--dhcp-range=set:s0,192.0.2.0,static,255.255.255.0,120s",
            "--dhcp-host=fa:16:3e:00:02:10,192.0.2.10",
            "--dhcp-option=tag:s0,option:classless-static-route,"
            "169.254.169.254/32,192.0.2.2,0.0.0.0/0,192.0.2.1",
            "--dhcp-option=tag:s0,option:dns-server,192.0.2.53",
            f"--dhcp-leasefile={files}/leases", f"--pid-file={files}/dnsmasq.pid",
        ],
        pid_dir=scratch.pid_dir,
        namespace=server,
        service="dnsmasq",
        log_path=files / "dnsmasq.log",
    )  # fmt: skip
    dnsmasq.enable()
    async with asyncio.timeout(15):  # under uvloop it once never returned (pipes held open)
        pid_file = await linux.run_dhclient(vm, "eth0", state_dir=scratch.pid_dir / "dhclient")
    assert linux.pid_alive(linux.read_pid(pid_file) or 0)  # renews in the background

    routes = {r.destination: r for r in await linux.list_routes(vm)}
    assert routes["169.254.169.254/32"].via == "192.0.2.2"
    assert routes["default"].via == "192.0.2.1"
    assert "192.0.2.10/24" in {a.cidr for a in await linux.list_addresses(vm, "eth0")}
    assert _read(RESOLV) == resolv_before
    assert dnsmasq.is_active()
