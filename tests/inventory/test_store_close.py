"""Closing the store waits for a query still running for a cancelled request.

At shutdown a request's task is cancelled while its query runs in aiosqlite's thread; the
session gives the connection back only when the query ends. Disposing of the engine before,
then closing the loop, made that thread answer a closed loop (``RuntimeError: Event loop is
closed`` printed from the thread, pytest's PytestUnhandledThreadExceptionWarning). Run in a
child interpreter: the failure shows only after its loop has closed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CHILD = """
import asyncio, sys, time
from pathlib import Path
from sqlalchemy import text
from cloudmeta.config import Config
from cloudmeta.inventory import Store

# ~1 s of SQLite's own work in aiosqlite's thread.
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
        "SELECT count(*) FROM c")

async def main() -> None:
    store = await Store.open(Config(state_path=Path(sys.argv[1])))
    async def request() -> None:
        async with store.read() as session:
            await session.execute(text(SLOW))
    task = asyncio.create_task(request())
    await asyncio.sleep(0.2)  # the query is running in the thread (it takes ~1 s)
    assert not task.done()
    task.cancel()
    await store.close()

asyncio.run(main())
time.sleep(2)  # a query left running would end now and answer the closed loop
"""


def test_close_waits_for_a_cancelled_requests_query(tmp_path: Path) -> None:
    state = tmp_path / "cmt-state"
    state.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(state)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Event loop is closed" not in result.stderr, result.stderr
