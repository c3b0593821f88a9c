"""Fixtures for the Linux plumbing tests: everything a test makes is removed even on failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
import uvloop
from linux_scratch import Scratch


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop too for a test marked ``asyncio(loop_factories=[...])``; the others plain asyncio."""
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def scratch(tmp_path: Path) -> AsyncIterator[Scratch]:
    made = Scratch(pid_dir=tmp_path / "cmt-pids")
    try:
        yield made
    finally:
        await made.clean()
