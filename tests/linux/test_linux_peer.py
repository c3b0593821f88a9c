"""The layer-2 peer of a TCP connection, for real: the saved SYN and the neighbour table."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
from linux_scratch import Scratch

from cloudmeta import linux
from cloudmeta.linux.peer import enable_saved_syn, neighbours, saved_syn_mac

pytestmark = pytest.mark.root

SERVER_MAC, CLIENT_MAC = "fa:16:3e:00:00:51", "fa:16:3e:00:00:52"


async def test_saved_syn_names_the_clients_mac_whatever_its_address(tmp_path: Path) -> None:
    scratch = Scratch(pid_dir=tmp_path / "cmt-v6p-pids", tag=f"cmt-v6p{secrets.token_hex(2)}")
    try:
        server, client = scratch.namespace("srv"), scratch.namespace("cli")
        linux.create_namespace(server)
        linux.create_namespace(client)
        await linux.run(
            ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client],
            namespace=server,
        )
        for ns, mac in ((server, SERVER_MAC), (client, CLIENT_MAC)):
            linux.set_sysctl(ns, "net.ipv6.conf.eth0.accept_dad", 0)
            await linux.set_link(ns, "eth0", mac=mac, up=True)
        await linux.add_address(server, "eth0", "fe80::a9fe:a9fe/128", nodad=True)
        # A static link-local address with no MAC in it (as stable-privacy ones are).
        await linux.add_address(client, "eth0", "fe80::1234:5678:9abc:def0/64", nodad=True)
        listener = linux.open_socket_in_namespace(server, "fe80::a9fe:a9fe", 80, interface="eth0")
        assert enable_saved_syn(listener)
        listener.setblocking(True)
        listener.settimeout(5)
        caller = linux.in_namespace(
            client, lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        )
        try:
            scope = linux.in_namespace(client, lambda: socket.if_nametoindex("eth0"))
            caller.bind(("fe80::1234:5678:9abc:def0", 0, 0, scope))
            caller.settimeout(5)
            caller.connect(("fe80::a9fe:a9fe", 80, 0, scope))
            conn, peer = listener.accept()
            with conn:
                assert peer[0].split("%")[0] == "fe80::1234:5678:9abc:def0"
                assert saved_syn_mac(conn) == CLIENT_MAC
                assert saved_syn_mac(conn) is None  # read once: the kernel frees it
            table = [n for n in neighbours(server) if n.address == "fe80::1234:5678:9abc:def0"]
            assert [n.mac for n in table] == [CLIENT_MAC]
        finally:
            caller.close()
            listener.close()
    finally:
        await scratch.clean()
    with pytest.raises(linux.LinuxError, match="does not exist"):
        neighbours(server)
