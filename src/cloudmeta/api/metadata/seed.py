"""``random_seed``: fresh random bytes in every ``meta_data.json``, as Nova's, for less.

Nova answers ``base64(os.urandom(512))`` per request. One ``getrandom`` call per request was
a visible share of a cached answer in the all-in-one's profile, so the bytes come from
a pool read :data:`BATCH` seeds at a time and sliced without reuse: every byte of the pool
goes into exactly one answer, then the pool is read anew. The service's processes are
exec'd, never forked, so no two processes share a pool.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable

__all__ = ["BATCH", "SEED_BYTES", "SeedPool"]

SEED_BYTES = 512  # Nova's size
BATCH = 64  # seeds per read of the OS's random source (32 KiB)


class SeedPool:
    """Base64 seeds of ``size`` fresh random bytes, from ``urandom`` in batches of ``batch``."""

    __slots__ = ("_offset", "_pool", "_read", "_size", "_span")

    def __init__(
        self,
        size: int = SEED_BYTES,
        batch: int = BATCH,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._size = size
        self._span = size * batch
        self._read = urandom
        self._pool = memoryview(b"")
        self._offset = 0

    def next(self) -> bytes:
        """The next seed (base64, no newline); its bytes were never used before."""
        start = self._offset
        end = start + self._size
        if end > len(self._pool):
            self._pool = memoryview(self._read(self._span))
            start, end = 0, self._size
        self._offset = end
        return binascii.b2a_base64(self._pool[start:end], newline=False)
