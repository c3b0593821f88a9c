"""Fixtures for the Linux plumbing tests: everything a test makes is removed even on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from linux_scratch import Scratch


@pytest.fixture
async def scratch(tmp_path: Path) -> AsyncIterator[Scratch]:
    made = Scratch(pid_dir=tmp_path / "cmt-pids")
    try:
        yield made
    finally:
        await made.clean()
