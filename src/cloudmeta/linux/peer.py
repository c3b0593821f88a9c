"""Who is at the other end of a TCP connection, at layer 2: the MAC its SYN came from.

An IPv6 link-local address says nothing trustworthy (stable-privacy, temporary or static
addresses carry no MAC; an EUI-64 one can be chosen by anybody), but port security enforces
the source MAC of every frame a port sends. So the peer is named by that MAC:

* **the saved SYN** (``TCP_SAVE_SYN = 2``, Linux >= 5.10): a listener keeps each connection's
  SYN with its MAC header, and ``TCP_SAVED_SYN`` on the accepted socket returns it once. One
  ``getsockopt`` per connection, and the MAC is the frame's own, not a claim in a packet;
* **the neighbour table** (``RTM_GETNEIGH`` in the namespace): the MAC the answers go to, so
  the one party that can hold the connection (port security checks the link-layer option of
  every neighbour discovery message a port sends). This is the caller where it is known
  (:func:`caller_mac`): a guest that claims its neighbour's link-local address gets the
  neighbour's SYN-ACKs, but the connection is then its own, whatever the SYN said; the saved
  SYN stands in for a missing entry and gives the alarm when the two disagree.

Pure parsers (:func:`mac_from_saved_syn`, :func:`parse_neighbours`, :func:`caller_mac`) plus
thin socket calls.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.netns import in_namespace

__all__ = [
    "Neighbour",
    "NeighbourTable",
    "caller_mac",
    "enable_saved_syn",
    "mac_from_saved_syn",
    "neighbours",
    "parse_neighbours",
    "saved_syn_mac",
]

TCP_SAVE_SYN = 27
TCP_SAVED_SYN = 28
SAVE_SYN_WITH_MAC = 2
_SAVED_SYN_MAX = 512
_ETH_HLEN = 14
_ETHERTYPES = {b"\x86\xdd": 6, b"\x08\x00": 4}

_RTM_NEWNEIGH, _RTM_GETNEIGH = 28, 30
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NDA_DST, _NDA_LLADDR = 1, 2
_NUD_INCOMPLETE, _NUD_FAILED = 0x01, 0x20
_NLMSG = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTATTR = struct.Struct("=HH")


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def enable_saved_syn(sock: socket.socket) -> bool:
    """Ask the kernel to keep each accepted connection's SYN with its MAC header; False where
    the kernel cannot (then callers fall back to the neighbour table)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, SAVE_SYN_WITH_MAC)
    except OSError:
        return False
    return True


def mac_from_saved_syn(data: bytes) -> str | None:
    """The Ethernet source of a saved SYN (MAC header, then the IP header); None when the
    bytes do not start with an Ethernet header carrying IPv4 or IPv6 (no SYN saved, or a
    link without one)."""
    if len(data) < _ETH_HLEN + 20:
        return None
    version = _ETHERTYPES.get(data[12:14])
    if version is None or data[_ETH_HLEN] >> 4 != version:
        return None
    return _mac(data[6:12])


def saved_syn_mac(sock: socket.socket) -> str | None:
    """The source MAC of ``sock``'s SYN (read once: the kernel frees it), or None."""
    try:
        data = sock.getsockopt(socket.IPPROTO_TCP, TCP_SAVED_SYN, _SAVED_SYN_MAX)
    except OSError:
        return None
    return mac_from_saved_syn(data)


def caller_mac(saved: str | None, neighbour: str | None) -> tuple[str | None, bool]:
    """(the caller's MAC, whether the SYN's and the neighbour entry's disagree): the entry
    names who receives the answers, so it wins; the SYN's MAC stands in without one."""
    if neighbour is None:
        return saved, False
    return neighbour, saved is not None and saved != neighbour


@dataclass(frozen=True, slots=True)
class Neighbour:
    address: str
    ifindex: int
    mac: str


def parse_neighbours(data: bytes) -> tuple[list[Neighbour], bool]:
    """``RTM_NEWNEIGH`` messages in a netlink reply -> (neighbours with a MAC, dump done)."""
    found: list[Neighbour] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        if kind == _NLMSG_DONE:
            return found, True
        if kind == _NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
            raise LinuxError(f"RTM_GETNEIGH failed: errno {-errno}")
        if kind == _RTM_NEWNEIGH:
            neighbour = _neighbour(data[offset + _NLMSG.size : offset + length])
            if neighbour is not None:
                found.append(neighbour)
        offset += (length + 3) & ~3
    return found, False


def _neighbour(body: bytes) -> Neighbour | None:
    if len(body) < _NDMSG.size:
        return None
    family, ifindex, state, _flags, _type = _NDMSG.unpack_from(body)
    if state & (_NUD_INCOMPLETE | _NUD_FAILED):
        return None
    dst = lladdr = None
    offset = _NDMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        value = body[offset + _RTATTR.size : offset + length]
        if kind == _NDA_DST:
            dst = value
        elif kind == _NDA_LLADDR:
            lladdr = value
        offset += (length + 3) & ~3
    if dst is None or lladdr is None or len(lladdr) != 6:
        return None
    if family == socket.AF_INET6 and len(dst) == 16:
        return Neighbour(str(ipaddress.IPv6Address(dst)), ifindex, _mac(lladdr))
    if family == socket.AF_INET and len(dst) == 4:
        return Neighbour(str(ipaddress.IPv4Address(dst)), ifindex, _mac(lladdr))
    return None


def _netlink() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)


class NeighbourTable:
    """A netlink socket in one namespace, kept open (it keeps the namespace alive: close it
    with the listeners): :meth:`mac_of` is one ``RTM_GETNEIGH`` request, tens of µs."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self._sock = sock
        self._where = where
        self._seq = 0
        sock.settimeout(1.0)

    @classmethod
    def open(cls, namespace: str | None = None) -> NeighbourTable:
        """The table of ``namespace`` (the current one for None); LinuxError if it is gone."""
        if namespace is None:
            return cls(_netlink(), "this namespace")
        return cls(in_namespace(namespace, _netlink), f"namespace {namespace}")

    def close(self) -> None:
        self._sock.close()

    def _ask(self, flags: int, body: bytes) -> list[Neighbour]:
        self._seq += 1
        header = _NLMSG.pack(_NLMSG.size + len(body), _RTM_GETNEIGH, flags, self._seq, 0)
        try:
            self._sock.sendto(header + body, (0, 0))
            found: list[Neighbour] = []
            while True:
                part, done = parse_neighbours(self._sock.recv(65536))
                found += part
                if done or not flags & _NLM_F_DUMP:
                    return found
        except OSError as exc:
            raise LinuxError(f"neighbour table of {self._where}: {exc}") from exc

    def dump(self, family: int = socket.AF_INET6) -> list[Neighbour]:
        """Every entry (a few in a DHCP or router namespace)."""
        return self._ask(_NLM_F_REQUEST | _NLM_F_DUMP, _NDMSG.pack(family, 0, 0, 0, 0))

    def mac_of(self, address: str, ifindex: int) -> str | None:
        """The MAC of ``address`` on interface ``ifindex``, None without a usable entry."""
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        dst = struct.pack("=HH", _RTATTR.size + len(ip.packed), _NDA_DST) + ip.packed
        try:
            found = self._ask(_NLM_F_REQUEST, _NDMSG.pack(family, ifindex, 0, 0, 0) + dst)
        except LinuxError:
            return None  # ENOENT: no entry
        return found[0].mac if found else None


def neighbours(namespace: str, family: int = socket.AF_INET6) -> list[Neighbour]:
    """The neighbour table of ``namespace`` by one dump on a socket opened for it. Raises
    :class:`LinuxError` when the namespace is gone."""
    table = NeighbourTable.open(namespace)
    try:
        return table.dump(family)
    finally:
        table.close()
