"""ISO 9660 images (a config drive) written and read back with xorriso.

Written the way Nova's ``configdrive.py`` calls genisoimage (Rock Ridge + Joliet, lowercase
names, dots and long names kept: ``-ldots -allow-lowercase -allow-multidot -l -J -r``), through
xorriso's mkisofs emulation, so a guest mounts it as it mounts a Nova config drive.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import run

__all__ = ["iso_volume_id", "read_iso", "write_iso"]

_XORRISO = "xorriso"


def _checked(name: str) -> str:
    clean = posixpath.normpath(name)
    if name.startswith("/") or clean != name or clean.split("/")[0] == "..":
        raise LinuxError(f"ISO file name {name!r} is not a plain relative path")
    return clean


async def write_iso(
    files: Mapping[str, bytes],
    dest: Path,
    *,
    volume_id: str,
    publisher: str = "cloudmeta",
    timeout: float = 60.0,  # noqa: ASYNC109 (kills xorriso, not just the wait)
) -> Path:
    """Write ``files`` (relative path -> bytes) as an ISO at ``dest``, atomically.

    The files are staged in a directory beside ``dest`` (removed afterwards) and the image is
    renamed into place, so a reader never sees half an image.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as stage:
        root = Path(stage) / "root"
        root.mkdir()
        for name, data in files.items():
            target = root / _checked(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        partial = Path(stage) / "image.iso"
        cmd = [
            _XORRISO, "-as", "mkisofs", "-o", str(partial),
            "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
            "-publisher", publisher, "-quiet", "-J", "-r", "-V", volume_id,
            str(root),
        ]  # fmt: skip
        await run(cmd, timeout=timeout)
        os.replace(partial, dest)
    return dest


async def iso_volume_id(image: Path) -> str:
    """The image's volume id (what ``blkid`` shows as LABEL), read from its primary descriptor."""
    result = await run([_XORRISO, "-indev", str(image), "-pvd_info"])
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Volume Id":
            return value.strip()
    raise LinuxError(f"{image}: xorriso shows no volume id")


async def read_iso(image: Path, timeout: float = 60.0) -> dict[str, bytes]:  # noqa: ASYNC109
    """Every regular file of the image (Rock Ridge names) as ``{relative path: bytes}``."""
    with tempfile.TemporaryDirectory(prefix=f".{image.name}.", dir=image.parent) as stage:
        out = Path(stage) / "x"
        await run(
            [_XORRISO, "-osirrox", "on", "-indev", str(image), "-extract", "/", str(out)],
            timeout=timeout,
        )
        found: dict[str, bytes] = {}
        for path in sorted(out.rglob("*")):
            if path.is_file():
                found[path.relative_to(out).as_posix()] = path.read_bytes()
            # Extracted Rock Ridge modes are read-only; the stage must stay removable.
            with contextlib.suppress(OSError):
                path.chmod(0o700 if path.is_dir() else 0o600)
        out.chmod(0o700)
        return found
