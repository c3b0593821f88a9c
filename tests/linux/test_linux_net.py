"""Namespaces, a bridge, veth ports, addresses, routes and sockets opened inside a namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
from linux_scratch import Scratch

from cloudmeta import linux

pytestmark = pytest.mark.root


def _host_ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text()


async def _two_ports(scratch: Scratch) -> tuple[str, str, str]:
    bridge = scratch.link("br")
    await linux.create_bridge(None, bridge)
    a, b = scratch.namespace("a"), scratch.namespace("b")
    for ns, tail, ip in ((a, "01", "192.0.2.11/24"), (b, "02", "192.0.2.12/24")):
        host_end = scratch.link(f"v{tail}")
        await linux.plug_veth(
            ns, "eth0", mac=f"fa:16:3e:00:00:{tail}", host_ifname=host_end, bridge=bridge, mtu=1450
        )
        await linux.add_address(ns, "eth0", ip)
    return bridge, a, b


async def test_namespace_create_is_idempotent_and_listed(scratch: Scratch) -> None:
    ns = scratch.namespace("x")
    linux.create_namespace(ns)
    assert linux.namespace_exists(ns)
    assert ns in linux.list_namespaces(scratch.tag)
    assert linux.list_namespaces(scratch.tag + "-none") == []
    assert [lk.name for lk in await linux.list_links(ns) if lk.up] == ["lo"]
    linux.delete_namespace(ns)
    linux.delete_namespace(ns)
    assert not linux.namespace_exists(ns)
    with pytest.raises(linux.LinuxError, match="does not exist"):
        await linux.list_links(ns)


async def test_two_namespaces_on_a_bridge_ping_each_other(scratch: Scratch) -> None:
    bridge, a, b = await _two_ports(scratch)
    links = {lk.name: lk for lk in await linux.list_links(a)}
    assert links["eth0"].mac == "fa:16:3e:00:00:01"
    assert links["eth0"].mtu == 1450 and links["eth0"].up
    host = {lk.name: lk for lk in await linux.list_links(None)}
    assert host[scratch.link("v01")].master == host[bridge].index
    # plugging again keeps the interface (same index) and its settings
    await linux.plug_veth(
        a, "eth0", mac="fa:16:3e:00:00:01", host_ifname=scratch.link("v01"), bridge=bridge
    )
    again = {lk.name: lk for lk in await linux.list_links(a)}
    assert again["eth0"].index == links["eth0"].index
    rtt = await linux.ping(a, "192.0.2.12")
    assert rtt is not None
    print(f"\nping over the bridge: {rtt * 1000:.2f} ms")
    assert await linux.ping(b, "192.0.2.99", timeout=0.3) is None


async def test_addresses_routes_and_sysctls(scratch: Scratch) -> None:
    _, a, _ = await _two_ports(scratch)
    await linux.add_address(a, "eth0", "169.254.169.254/32")
    await linux.add_address(a, "eth0", "169.254.169.254/32")
    await linux.add_address(a, "eth0", "fe80::a9fe:a9fe/64", nodad=True)
    await linux.add_address(a, "eth0", "2001:db8::11/64", nodad=True)
    cidrs = {ad.cidr for ad in await linux.list_addresses(a, "eth0")}
    assert {"192.0.2.11/24", "169.254.169.254/32", "fe80::a9fe:a9fe/64"} <= cidrs
    await linux.add_route(a, "default", via="192.0.2.1")
    await linux.add_route(a, "203.0.113.0/24", via="192.0.2.12")
    await linux.add_route(a, "198.51.100.7/32", dev="eth0")
    await linux.add_route(a, "default", via="2001:db8::1")
    routes = {r.destination: r for r in await linux.list_routes(a)}
    assert routes["default"].via == "192.0.2.1"
    assert routes["203.0.113.0/24"].via == "192.0.2.12"
    assert routes["198.51.100.7/32"].dev == "eth0"
    assert [r.via for r in await linux.list_routes(a, version=6) if r.destination == "default"] == [
        "2001:db8::1"
    ]
    await linux.delete_route(a, "203.0.113.0/24")
    await linux.delete_route(a, "203.0.113.0/24")
    await linux.flush_routes(a, dev="eth0")
    left = await linux.list_routes(a)
    assert [r.destination for r in left] == ["192.0.2.0/24"]
    await linux.delete_address(a, "eth0", "169.254.169.254/32")
    await linux.delete_address(a, "eth0", "169.254.169.254/32")
    assert "169.254.169.254/32" not in {ad.cidr for ad in await linux.list_addresses(a)}

    host_forward = _host_ip_forward()
    linux.set_sysctl(a, "net.ipv4.ip_forward", 1)
    linux.set_sysctl(a, "net.ipv6.conf.eth0.accept_ra", 0)
    out = await linux.run(["sysctl", "-n", "net.ipv4.ip_forward"], namespace=a)
    assert out.stdout.strip() == "1"
    assert _host_ip_forward() == host_forward


async def test_run_raises_one_error_with_command_and_stderr(scratch: Scratch) -> None:
    ns = scratch.namespace("r")
    with pytest.raises(linux.LinuxError) as info:
        await linux.run(["ip", "link", "show", "cmt-nothing"], namespace=ns)
    assert info.value.cmd is not None and "cmt-nothing" in info.value.cmd
    assert "cmt-nothing" in info.value.stderr
    with pytest.raises(linux.LinuxError, match="timed out"):
        await linux.run(["sleep", "5"], namespace=ns, timeout=0.2)


async def test_http_on_169_254_169_254_in_one_namespace_answers_curl_in_another(
    scratch: Scratch,
) -> None:
    _, server_ns, client_ns = await _two_ports(scratch)
    # bound before the address exists (IP_FREEBIND), the caller's namespace never changes
    own_ns = os.stat("/proc/thread-self/ns/net").st_ino
    sock = linux.open_socket_in_namespace(server_ns, "169.254.169.254", 80)
    assert os.stat("/proc/thread-self/ns/net").st_ino == own_ns
    await linux.add_address(server_ns, "eth0", "169.254.169.254/32")
    await linux.add_route(client_ns, "169.254.169.254/32", via="192.0.2.11")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        peer = writer.get_extra_info("peername")[0]
        body = f"hello {peer}".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    try:
        result = await linux.run(
            ["curl", "-sS", "--max-time", "5", "http://169.254.169.254/latest"],
            namespace=client_ns,
        )
        assert result.stdout == "hello 192.0.2.12"
    finally:
        server.close()
        await server.wait_closed()


async def test_link_local_v6_listener_uses_the_interface_scope(scratch: Scratch) -> None:
    _, server_ns, _ = await _two_ports(scratch)
    await linux.add_address(server_ns, "eth0", "fe80::a9fe:a9fe/64", nodad=True)
    sock = linux.open_socket_in_namespace(server_ns, "fe80::a9fe:a9fe", 80, interface="eth0")
    try:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[3] > 0
    finally:
        sock.close()
    with pytest.raises(linux.LinuxError, match="cannot listen"):
        linux.open_socket_in_namespace(server_ns, "192.0.2.11", 80, interface="cmt-none")


async def test_make_listening_socket_is_the_one_listener_recipe(scratch: Scratch) -> None:
    """The ns-metadata-proxy process and open_socket_in_namespace share this function."""
    _, server_ns, _ = await _two_ports(scratch)
    await linux.add_address(server_ns, "eth0", "fe80::a9fe:a9fe/64", nodad=True)

    def make_both() -> tuple[socket.socket, socket.socket]:
        v4 = linux.make_listening_socket("169.254.169.254", 80)  # no such address yet
        v6 = linux.make_listening_socket("fe80::a9fe:a9fe", 80, interface="eth0")
        return v4, v6

    v4, v6 = linux.in_namespace(server_ns, make_both)
    try:
        assert v4.getsockname() == ("169.254.169.254", 80)
        assert v4.getsockopt(socket.IPPROTO_IP, 15) == 1  # IP_FREEBIND
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert v6.getsockname()[3] > 0 and not v4.getblocking()
    finally:
        v4.close()
        v6.close()


def test_two_hundred_namespaces_benchmark() -> None:
    """Prints the figure; asserts only that everything made is gone again."""
    tag = Scratch(Path("/nonexistent")).tag
    names = [f"{tag}-{i}" for i in range(200)]
    fds = len(os.listdir("/proc/self/fd"))
    start = time.monotonic()
    try:
        for name in names:
            linux.create_namespace(name)
        made = time.monotonic() - start
        print(f"\n200 namespaces created in {made:.3f} s")
    finally:
        for name in names:
            linux.delete_namespace(name)
    assert linux.list_namespaces(tag) == []
    assert len(os.listdir("/proc/self/fd")) == fds
