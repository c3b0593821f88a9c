"""Netlink coroutines run on a plain asyncio loop, whatever loop the caller runs.

pyroute2's AsyncIPRoute wraps its AF_NETLINK socket in a datagram transport; uvloop refuses that
family ("cannot open a UDP handle, invalid family 16"). The services run on uvloop for speed, so
netlink calls made from a uvloop loop hop to one private selector loop in a daemon thread; from a
plain asyncio loop they run in place.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["plain_loop"]

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _private_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.SelectorEventLoop()
            threading.Thread(target=loop.run_forever, name="netlink-loop", daemon=True).start()
            _loop = loop
        return _loop


def plain_loop(
    func: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a netlink coroutine so it always runs on a plain asyncio loop."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
            return await func(*args, **kwargs)
        future = asyncio.run_coroutine_threadsafe(func(*args, **kwargs), _private_loop())
        return await asyncio.wrap_future(future)

    return wrapper
