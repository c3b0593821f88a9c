"""Fixtures shared by every test folder: a private state directory and a configuration in it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from cloudmeta.config import Config

ConfigFactory = Callable[..., Config]


def pytest_configure(config: pytest.Config) -> None:
    """Plain tracebacks in the in-process servers' logs: structlog's default renders a rich one
    with every frame's locals, seconds of work on the event loop of a busy machine (it once held
    a fault test's loop for ~9 s, past its clients' timeouts)."""
    processors = list(structlog.get_config()["processors"])
    processors[-1] = structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )
    structlog.configure(processors=processors)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` need namespaces; without root they are skipped, saying why."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces (run make test as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cmt-state"
    path.mkdir()
    return path


@pytest.fixture
def make_config(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ConfigFactory:
    """Build a Config rooted in this test's state dir, with the test name prefixes set."""
    for key in list(os.environ):
        if key.startswith("CLOUDMETA_"):
            monkeypatch.delenv(key)

    def factory(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "state_path": state_dir,
            "namespace_prefix": "cmt-",
            "device_prefix": "cmt-",
            "metadata_proxy_shared_secret": "cmt-test-secret",
            "log_format": "json",
            # One process per agent unless a test asks for workers (tests/proxy/
            # test_inline_workers.py): the default, auto, would give every test's all-in-one
            # a worker per core of the machine it runs on.
            "metadata_workers": 1,
        }
        values.update(overrides)
        return Config(**values)

    return factory
