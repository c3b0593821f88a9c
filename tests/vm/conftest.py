"""The VM tests' image: the machine-wide cached one, built on the first run only."""

from __future__ import annotations

import asyncio

import pytest

from cloudmeta.config import Config
from cloudmeta.lab.vm import image


@pytest.fixture(scope="session")
def vm_image() -> image.CachedImage:
    """The lab's image from the machine-wide cache (built on the first run only)."""
    return asyncio.run(image.ensure_image(Config().image_cache_path))
