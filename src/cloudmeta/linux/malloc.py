"""glibc's malloc: keep big temporary buffers out of the heap of a long-running agent.

glibc serves a request above ``M_MMAP_THRESHOLD`` (128 KiB) with its own mapping, unmapped
again on free; but freeing such a chunk raises the threshold to its size (the "dynamic"
threshold), and from then on buffers that size come from the heap of the calling thread's
arena. The netlink loop (:mod:`cloudmeta.linux._loop`) reads every datagram through asyncio's
datagram transport, which asks ``recvfrom`` for a fresh 256 KiB buffer and shrinks it to the
datagram: once the threshold has risen, each of those lands in the netlink thread's arena,
and the small chunks left between them pin the freed space. Measured in ``cloudmeta
dhcp-agent`` (bench ``memory``, 1 -> 50 networks): a thread arena (the netlink loop is its only
busy thread) grew ~25 KiB per served network while glibc's live bytes grew ~3 KiB, the rest
free space (``malloc_trim(0)`` returned ~70% of it); with the threshold fixed (the same run
under ``MALLOC_MMAP_THRESHOLD_=131072``) glibc's heaps stayed flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

MMAP_THRESHOLD = 128 * 1024  # glibc's own initial value, made fixed
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (no dynamic rise) for this process.

    Returns False where the C library has no ``mallopt`` (not glibc) or refuses the value.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
