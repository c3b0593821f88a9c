"""lab up's supervision of the all-in-one: a clean stop is left alone (the crash path, restart
and adoption, is tests/faults/test_lab_faults.py with a real all-in-one)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

from cloudmeta.config import Config
from cloudmeta.lab.state import LabState
from cloudmeta.lab.supervise import supervise_all_in_one


async def _never(_: Any) -> None:
    raise AssertionError("a stopped all-in-one must not be restarted")


async def test_clean_stop_ends_supervision(make_config: Any) -> None:
    config: Config = make_config()
    said: list[str] = []
    for stop in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(["sleep", "30"])  # noqa: ASYNC220 (waited for by the pidfd)
        watch = asyncio.create_task(
            supervise_all_in_one(config, LabState(), proc, _never, said.append)
        )
        await asyncio.sleep(0.1)
        proc.send_signal(stop)
        await asyncio.wait_for(watch, 5)
    assert len(said) == 2 and all("not restarting" in line for line in said)
