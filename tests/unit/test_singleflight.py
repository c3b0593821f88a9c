"""SingleFlight: one run per key, its outcome shared; driven by events, never by sleeps."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import pytest

from cloudmeta.singleflight import SingleFlight


class Work:
    """A fetch that blocks until released and counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: Callable[[], BaseException] | None = None  # a new exception per run

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail()
        return f"value-{self.runs}"


async def _waiting(flight: SingleFlight[str, str], work: Work, n: int) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(flight.run("k", work)) for _ in range(n)]
    await work.started.wait()
    return tasks


async def test_concurrent_calls_share_one_run() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    tasks = await _waiting(flight, work, 5)
    work.release.set()
    assert await asyncio.gather(*tasks) == ["value-1"] * 5
    assert work.runs == 1
    assert "k" not in flight  # the next call runs the work again
    assert await flight.run("k", work) == "value-2"


async def test_an_exception_reaches_every_waiter_and_is_never_unretrieved() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.fail = lambda: RuntimeError("cmt-boom")
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        tasks = await _waiting(flight, work, 3)
        work.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [str(r) for r in results] == ["cmt-boom"] * 3
        assert all(isinstance(r, RuntimeError) for r in results)
        del tasks, results
        gc.collect()  # an unretrieved exception is reported when its future is collected
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_lone_failing_leader_leaves_no_warning() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    work.fail = lambda: ValueError("cmt-alone")
    work.release.set()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        try:
            await flight.run("k", work)
        except ValueError as exc:
            assert str(exc) == "cmt-alone"
        else:
            raise AssertionError("the work's exception was not raised")
        gc.collect()  # the failed flight's future is garbage now; unretrieved, it would report
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_cancelling_the_leader_hands_the_work_to_a_waiter() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    leader, *waiters = await _waiting(flight, work, 3)
    work.started.clear()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await work.started.wait()  # a waiter took over and runs the work itself
    work.release.set()
    assert await asyncio.gather(*waiters) == ["value-2", "value-2"]
    assert work.runs == 2


async def test_a_cancelled_waiter_does_not_disturb_the_leader() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    leader, waiter = await _waiting(flight, work, 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    work.release.set()
    assert await leader == "value-1"
    assert work.runs == 1
