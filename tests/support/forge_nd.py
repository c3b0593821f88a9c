"""Run inside an instance namespace: send a neighbour solicitation for fe80::a9fe:a9fe from our
own link-local address whose source link-layer option names ANOTHER MAC (argv: our address,
the interface, the forged MAC). Plain sockets; the kernel fills in the ICMPv6 checksum."""

from __future__ import annotations

import ipaddress
import socket
import sys

TARGET = ipaddress.IPv6Address("fe80::a9fe:a9fe")


def main() -> None:
    source, ifname, mac = sys.argv[1], sys.argv[2], sys.argv[3]
    scope = socket.if_nametoindex(ifname)
    solicited = ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + TARGET.packed[13:])
    option = bytes([1, 1]) + bytes.fromhex(mac.replace(":", ""))
    message = bytes([135, 0, 0, 0]) + bytes(4) + TARGET.packed + option
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, scope)
        sock.bind((source, 0, 0, scope))
        for _ in range(3):
            sock.sendto(message, (str(solicited), 0, 0, scope))


if __name__ == "__main__":
    main()
