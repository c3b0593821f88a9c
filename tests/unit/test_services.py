"""run_until_signal: a service that ends by itself ends the process with an error."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from cloudmeta import services
from cloudmeta.config import Config
from cloudmeta.services import Running, ServiceFailed, ServiceSet, run_until_signal


def _fake_services(work: Any) -> Any:
    @asynccontextmanager
    async def running(config: Config, wanted: ServiceSet) -> AsyncIterator[Running]:
        task = asyncio.create_task(work(), name="dhcp-agent")
        try:
            yield Running({}, None, [task])
        finally:
            task.cancel()

    return running


async def _broken() -> None:
    raise RuntimeError("dnsmasq exploded")


async def _returns() -> None:
    return None


@pytest.mark.parametrize("work", [_broken, _returns], ids=["raises", "returns"])
async def test_a_service_that_ends_by_itself_is_a_failure(
    work: Any, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "running_services", _fake_services(work))
    with pytest.raises(ServiceFailed, match="dhcp-agent"):
        await run_until_signal(make_config(), ServiceSet(dhcp=True))


async def test_a_signal_is_a_clean_stop(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(services, "running_services", _fake_services(forever))
    ready = asyncio.Event()
    run = asyncio.create_task(
        run_until_signal(make_config(), ServiceSet(dhcp=True), lambda _: ready.set())
    )
    await ready.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 10)
