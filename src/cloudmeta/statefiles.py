"""Secrets cloudmeta keeps in ``state_path`` so they survive a restart (made on first start).

Services on one host share ``state_path``, so the admin token, the metadata proxy shared secret
and the API's token and identity keys need no configuration there; several hosts set the
shared values in their configuration instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cloudmeta.config import Config

__all__ = ["ensure_admin_token", "read_or_create", "shared_secret"]

SHARED_SECRET_FILE = "metadata_proxy_shared_secret"


def read_or_create(path: Path, make: Callable[[], bytes] | None = None, size: int = 32) -> bytes:
    """The file's bytes, or new ones (``make`` or ``size`` random bytes) written mode 0600.

    The new file is linked into place atomically, so two processes starting at once agree.
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


def _configured_or_kept(configured: str, path: Path) -> str:
    if configured:
        return configured
    return read_or_create(path, make=lambda: secrets.token_urlsafe(32).encode()).decode().strip()


def ensure_admin_token(config: Config) -> str:
    """The configured ``admin_token``, else the one in ``<state_path>/admin_token``."""
    configured = config.admin_token.get_secret_value() if config.admin_token else ""
    return _configured_or_kept(configured, config.admin_token_file)


def shared_secret(config: Config) -> str:
    """``metadata_proxy_shared_secret``, else one kept in ``<state_path>``; never empty.

    An empty key would let anyone who reaches the metadata API sign any instance id, so an
    unset secret means a generated one that the API and agent of this host share.
    """
    return _configured_or_kept(
        config.metadata_proxy_shared_secret.get_secret_value(),
        config.state_path / SHARED_SECRET_FILE,
    )
