"""ICMP echo from inside a namespace (no ``ping`` binary is needed on the host)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.netns import in_namespace

__all__ = ["ping"]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    payload = b"cloudmeta-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


async def ping(namespace: str, address: str, *, timeout: float = 2.0) -> float | None:  # noqa: ASYNC109
    """Round-trip time in seconds of one IPv4 ICMP echo from ``namespace``, None if no reply."""
    try:
        sock = in_namespace(
            namespace,
            lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        )
    except OSError as exc:
        raise LinuxError(f"cannot open an ICMP socket in {namespace}: {exc}") from exc
    loop = asyncio.get_running_loop()
    ident, seq = os.getpid() & 0xFFFF, int.from_bytes(os.urandom(2), "big")
    with sock:
        sock.setblocking(False)
        start = time.monotonic()
        await loop.sock_sendto(sock, _echo_request(ident, seq), (address, 0))
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                data, peer = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            except TimeoutError:
                return None
            icmp = data[(data[0] & 0x0F) * 4 :]
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind == 0 and rid == ident and rseq == seq and peer[0] == address:
                return time.monotonic() - start
    return None
