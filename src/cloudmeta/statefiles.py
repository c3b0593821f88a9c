"""Secrets the API keeps in ``state_path`` so they survive a restart (created on first start)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_or_create"]


def read_or_create(path: Path, make: Callable[[], bytes] | None = None, size: int = 32) -> bytes:
    """The file's bytes, or new ones (``make`` or ``size`` random bytes) written mode 0600.

    The new file is linked into place atomically, so two workers starting at once agree.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make() if make is not None else secrets.token_bytes(size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        data = path.read_bytes()
    finally:
        tmp.unlink()
    return data
