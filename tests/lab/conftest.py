"""Fixtures of the lab's root tests: a private configuration per test."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labkit import free_port

from cloudmeta.config import Config


@pytest.fixture
def short_state() -> Iterator[Path]:
    """A state dir with a short path: a node's unix sockets live in it, and pytest-xdist's
    ``popen-gwN`` tmp paths pushed them past AF_UNIX's 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cmt-lab-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab_config(make_config: Callable[..., Config], short_state: Path) -> Config:
    """Own state dir, ports and ``cmt-<tag>-`` prefixes: labs of parallel runs never meet."""
    admin, metadata = free_port(), free_port()
    return make_config(
        state_path=short_state,
        namespace_prefix=f"cmt-{secrets.token_hex(3)}-",
        # Link names must fit in 15 characters: "cmt-NN" + "brq" + 6 chars of an id.
        device_prefix=f"cmt-{secrets.randbelow(90) + 10}",
        admin={"listen": "127.0.0.1", "port": admin},
        admin_url=f"http://127.0.0.1:{admin}",
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        nova_metadata_port=metadata,
        enable_isolated_metadata=True,
    )
