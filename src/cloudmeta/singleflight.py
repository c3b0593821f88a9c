"""Single flight: concurrent calls for one key share one run of the work (pure asyncio).

A boot storm asks for one cold instance or port many times at once; the first caller (the
leader) runs the work, the others wait for its outcome. An exception reaches every waiter and
is marked retrieved, so asyncio logs no "exception was never retrieved". When the leader is
cancelled, its waiters are not: one of them becomes the next leader and runs the work again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The runs in flight, by key."""

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    def __iter__(self) -> Iterator[K]:
        """The keys in flight now (a copy: flights may end while the caller iterates)."""
        return iter(list(self._flights))

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """``work()``'s result, shared with every call for ``key`` made while it runs."""
        while True:
            pending = self._flights.get(key)
            if pending is None:
                return await self._lead(key, work)
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # we were cancelled ourselves
                # The leader was cancelled, not us: take over.

    async def _lead(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            value = await work()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters re-raise it, nobody else must log it
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._flights[key]
