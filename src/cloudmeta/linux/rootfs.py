"""A Debian root tree and a disk image of it: ``mmdebstrap`` and ``mkfs.ext4 -d``, no loop mounts.

``mmdebstrap`` uses the machine's configured Debian mirror (``/etc/apt/sources.list*``), as apt
does; its progress lines are handed to the caller one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import run

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

__all__ = ["bootstrap", "make_ext4", "mounts_under", "run_in_root"]


async def bootstrap(
    suite: str,
    root: Path,
    packages: Sequence[str],
    *,
    on_line: Callable[[str], None] | None = None,
    timeout: float = 900.0,  # noqa: ASYNC109
) -> None:
    """``mmdebstrap --variant=minbase`` of ``suite`` with ``packages`` into the new dir ``root``."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        suite,
        str(root),
    ]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
        )
    except OSError as exc:
        raise LinuxError(f"cannot run mmdebstrap: {exc}", cmd=argv) from exc
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                tail = [*tail[-19:], line]
                if on_line is not None and line:
                    on_line(line)
            code = await proc.wait()
    except (TimeoutError, asyncio.CancelledError):
        # SIGTERM first: mmdebstrap then unmounts the /proc, /sys and /dev it mounted in root.
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise
    if code != 0:
        raise LinuxError(
            f"mmdebstrap failed (exit {code}):\n" + "\n".join(tail), cmd=argv, returncode=code
        )


async def run_in_root(root: Path, argv: Sequence[str], timeout: float = 300.0) -> None:  # noqa: ASYNC109
    """``argv`` chrooted into the tree (no /proc there: enough for update-initramfs)."""
    await run(
        ["chroot", str(root), *argv], timeout=timeout, env={"PATH": _PATH, "LC_ALL": "C.UTF-8"}
    )


async def make_ext4(root: Path, disk: Path, size: str, label: str) -> None:
    """A raw ext4 image ``disk`` of ``size`` holding the tree ``root`` (``mkfs.ext4 -d``)."""
    await run(["rm", "-f", str(disk)])
    await run(["truncate", "-s", size, str(disk)])
    await run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(root), str(disk)], timeout=300)


def mounts_under(path: Path) -> list[str]:
    """Mount points inside ``path`` (a build tree must have none before it is deleted: removing
    files through a mounted /dev or /sys would reach the host's)."""
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return found
