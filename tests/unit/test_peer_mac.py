"""The layer-2 peer of a connection from bytes: a saved SYN, a netlink neighbour dump."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.peer import Neighbour, caller_mac, mac_from_saved_syn, parse_neighbours

DST, SRC = bytes.fromhex("fa163e000001"), bytes.fromhex("fa163e00000a")
IPV6 = bytes([0x60]) + bytes(39)
TCP = bytes(20)


def test_saved_syn_with_an_ethernet_header_names_the_source() -> None:
    assert mac_from_saved_syn(DST + SRC + b"\x86\xdd" + IPV6 + TCP) == "fa:16:3e:00:00:0a"
    ipv4 = bytes([0x45]) + bytes(19)
    assert mac_from_saved_syn(DST + SRC + b"\x08\x00" + ipv4 + TCP) == "fa:16:3e:00:00:0a"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        IPV6 + TCP,  # saved without its MAC header (TCP_SAVE_SYN = 1)
        DST + SRC + b"\x81\x00" + IPV6 + TCP,  # not IP straight after
        DST + SRC + b"\x86\xdd" + bytes([0x45]) + bytes(59),  # says IPv6, carries IPv4
    ],
)
def test_anything_else_names_nobody(data: bytes) -> None:
    assert mac_from_saved_syn(data) is None


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def _neigh(address: str, ifindex: int, mac: bytes | None, state: int = 0x02) -> bytes:
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    body = struct.pack("=BxxxiHBB", family, ifindex, state, 0, 1) + _attr(1, ip.packed)
    if mac is not None:
        body += _attr(2, mac)
    return struct.pack("=IHHII", 16 + len(body), 28, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + bytes(4)


def test_a_neighbour_dump_is_parsed_and_unusable_entries_skipped() -> None:
    data = (
        _neigh("fe80::1", 2, SRC)
        + _neigh("fe80::2", 2, None)  # no link-layer address
        + _neigh("fe80::3", 2, DST, state=0x20)  # FAILED
        + _neigh("fe80::4", 2, DST, state=0x01)  # INCOMPLETE
        + _neigh("192.0.2.7", 3, DST)
    )
    found, done = parse_neighbours(data)
    assert not done
    assert found == [
        Neighbour("fe80::1", 2, "fa:16:3e:00:00:0a"),
        Neighbour("192.0.2.7", 3, "fa:16:3e:00:00:01"),
    ]
    assert parse_neighbours(DONE) == ([], True)


def test_a_netlink_error_is_raised() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -22) + bytes(16)
    with pytest.raises(LinuxError, match="errno 22"):
        parse_neighbours(error)


def test_the_neighbour_entry_names_the_caller_and_the_syn_gives_the_alarm() -> None:
    a, b = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b"
    assert caller_mac(a, a) == (a, False)
    assert caller_mac(None, a) == (a, False)  # a syncookie: no SYN saved
    assert caller_mac(a, None) == (a, False)  # no entry (gone already): the SYN's
    assert caller_mac(None, None) == (None, False)
    # The answers go to b, so the connection is b's, whatever its SYN said.
    assert caller_mac(a, b) == (b, True)
