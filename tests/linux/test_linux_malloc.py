"""glibc's mmap threshold stays fixed in the agents: 256 KiB buffers never land in the heap."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

import cloudmeta

# In a fresh interpreter: free one mapping bigger than 256 KiB (which raises glibc's dynamic
# threshold above that), then hold 16 buffers of 256 KiB, the size of asyncio's datagram reads,
# and print how much the heap (mallinfo2's arena: not the separate mappings) grew meanwhile.
_PROBE = """
import ctypes, sys
from cloudmeta.linux.malloc import fix_mmap_threshold

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = bytearray(300 * 1024)
del big
before = libc.mallinfo2().arena
held = [bytearray(256 * 1024) for _ in range(16)]
print(libc.mallinfo2().arena - before)
"""


def _heap_growth(mode: str) -> int:
    src = str(Path(cloudmeta.__file__).parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout)


def test_fixed_threshold_keeps_big_buffers_out_of_the_heap() -> None:
    if not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    # Without it most of the 4 MiB of buffers come from the heap (the dynamic threshold rose) ...
    assert _heap_growth("dynamic") >= 3 * 1024 * 1024
    # ... with it each has its own mapping, unmapped on free.
    assert _heap_growth("fixed") < 256 * 1024
