"""Fixtures for the Linux plumbing tests: everything a test makes is removed even on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from linux_scratch import Scratch

from cloudmeta import linux


@pytest.fixture
async def scratch() -> AsyncIterator[Scratch]:
    made = Scratch()
    try:
        yield made
    finally:
        for link in made.host_links:
            await linux.delete_link(None, link)
        for ns in made.namespaces:
            linux.delete_namespace(ns)
