"""Inline metadata worker processes: ``metadata_workers = N`` serves the inline listeners with N.

In inline mode one process answers every namespace's instances (its embedded metadata agent
and, in the all-in-one, the metadata API called in-process); that process saturates one core.
With ``metadata_workers = N`` it starts N-1 workers (``python -m cloudmeta.inline_workers``,
:class:`cloudmeta.workerpool.WorkerPool`: the same supervised mechanism as the metadata API's
workers). Each worker runs its own :class:`MetadataAgent` (own port cache following the admin
API's change feed, own signer) and, when the parent runs the metadata API in-process, its own
in-process metadata API on its own :class:`Store` (``migrate=False``; the store's change token
makes an admin write seen by the next request of every process). For every namespace the
parent listens in, each worker opens its own sockets on the same binds with SO_REUSEPORT
(:meth:`InlineListeners.ensure`), so the kernel spreads the instances' connections over the
processes, and the accepted socket's netns cookie names the network in each of them.

The parent publishes its listeners as JSON lines on each worker's stdin (the pipe whose EOF
stops the worker): ``ensure`` (namespace, target, binds) and ``remove`` (namespace), each
answered by the worker once done, and waited for: when the parent's ``remove`` returns, no
worker listens in that namespace (a worker that fails to stop, or does not answer within
``ANSWER_TIMEOUT``, is killed). A started or respawned worker gets the whole current set
before it counts as a member; messages are written under one lock, so no change is missed
or reordered between that replay and the next publication.

What is per process: the connection budgets (``metadata_proxy_max_connections*``), the rate
limiter's windows (``[metadata_rate_limiting]``) and the caches. The request counters and cache
counters of the workers are merged into the parent's scrape (multiprocess mode); the workers'
open-connection gauges are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from cloudmeta.config import Config
from cloudmeta.logs import get_logger
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.inline import InlineListeners
from cloudmeta.workerpool import (
    Worker,
    WorkerGone,
    WorkerPool,
    announce_ready,
    parent_messages,
    read_payload,
    reply,
)

__all__ = ["ANSWER_TIMEOUT", "InlineWorkers"]

ANSWER_TIMEOUT = 10.0  # seconds a worker has to open or close a namespace's sockets

_log = get_logger("proxy")


def _ensure_message(namespace: str, target: ProxyTarget, binds: Sequence[Bind]) -> dict[str, Any]:
    return {
        "op": "ensure",
        "namespace": namespace,
        "network_id": target.network_id,
        "router_id": target.router_id,
        "binds": [[b.host, b.port, b.interface] for b in binds],
    }


class InlineWorkers:
    """The parent's side: ``count`` workers that follow its :class:`InlineListeners`
    (set as their ``followers``). ``local_api``: the parent runs the metadata API in-process,
    so each worker runs its own."""

    def __init__(self, config: Config, count: int, *, local_api: bool) -> None:
        self._set: dict[str, dict[str, Any]] = {}  # namespace -> its ensure message
        self._members: dict[int, Worker] = {}  # slot -> the worker that got the whole set
        self._lock = asyncio.Lock()
        self._joined = asyncio.Condition()
        self._pool = WorkerPool(
            "inline-workers",
            __name__,
            (config, local_api),
            count,
            config.state_path,
            on_ready=self._join,
        )

    def pids(self) -> list[int]:
        """The pids of the workers that serve the current set."""
        return [w.pid for w in self._members.values() if not w.gone]

    async def wait_for(self, predicate: Callable[[list[int]], bool]) -> None:
        """Until ``predicate(pids())`` holds (re-checked whenever a worker joins)."""
        async with self._joined:
            await self._joined.wait_for(lambda: predicate(self.pids()))

    async def start(self) -> None:
        await self._pool.start()

    async def close(self) -> None:
        async with self._lock:
            self._members.clear()
        await self._pool.close()

    async def ensure(self, namespace: str, target: ProxyTarget, binds: Sequence[Bind]) -> None:
        message = _ensure_message(namespace, target, binds)
        async with self._lock:
            self._set[namespace] = message
            sent = self._send_all(message)
        await self._answers(sent, message)

    async def remove(self, namespace: str) -> None:
        message = {"op": "remove", "namespace": namespace}
        async with self._lock:
            if self._set.pop(namespace, None) is None:
                return
            sent = self._send_all(message)
        await self._answers(sent, message)

    def _send_all(self, message: dict[str, Any]) -> list[tuple[Worker, asyncio.Future[Any]]]:
        return [(w, w.send(message)) for w in self._members.values() if not w.gone]

    async def _join(self, worker: Worker) -> None:
        """A started worker: the whole current set, then it is a member."""
        async with self._lock:
            sent = [(message, worker.send(message)) for message in self._set.values()]
            self._members[worker.slot] = worker
        for message, future in sent:
            await self._answer(worker, future, message)
        async with self._joined:
            self._joined.notify_all()

    async def _answers(
        self, sent: list[tuple[Worker, asyncio.Future[Any]]], message: dict[str, Any]
    ) -> None:
        await asyncio.gather(*(self._answer(w, f, message) for w, f in sent))

    async def _answer(
        self, worker: Worker, future: asyncio.Future[Any], message: dict[str, Any]
    ) -> None:
        """Wait for one worker's answer; a worker that cannot follow a removal is killed (a
        respawned one gets the current set), one that cannot open a namespace logged."""
        try:
            answer = await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except WorkerGone:
            return  # respawned with the current set
        except TimeoutError:
            answer = {"error": f"no answer within {ANSWER_TIMEOUT} s"}
        error = answer.get("error")
        if error is None:
            return
        fields = {"pid": worker.pid, "op": message["op"], "namespace": message.get("namespace")}
        if message["op"] == "ensure" and "no answer" not in error:
            _log.warning("inline worker cannot listen; the others serve", error=error, **fields)
            return
        _log.error("inline worker failed; killing it", error=error, **fields)
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()
        await worker.proc.wait()


# -- the worker ----------------------------------------------------------------------------------


async def _follow(listeners: InlineListeners) -> None:
    """Apply the parent's messages in order, answering each; returns at the parent's EOF."""
    async for message in parent_messages():
        seq = int(message["seq"])
        try:
            if message["op"] == "ensure":
                target = ProxyTarget(
                    network_id=message["network_id"], router_id=message["router_id"]
                )
                binds = [Bind(host, port, interface) for host, port, interface in message["binds"]]
                await listeners.ensure(message["namespace"], target, binds)
            elif message["op"] == "remove":
                await listeners.remove(message["namespace"])
            else:
                raise ValueError(f"unknown operation {message['op']!r}")
        except Exception as exc:
            reply(seq, error=str(exc) or type(exc).__name__)
            continue
        reply(seq, ok=True)


async def _serve(config: Config, local_api: bool) -> None:
    from cloudmeta.adminclient import AdminClient
    from cloudmeta.agent.service import MetadataAgent
    from cloudmeta.signing import LocalMetadataApi

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the parent decides when the workers stop.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    async with AsyncExitStack() as stack:
        local: LocalMetadataApi | None = None
        if local_api:
            from cloudmeta.api.metadata import local_api as local_handler
            from cloudmeta.api.metadata import metadata_server
            from cloudmeta.inventory import Store

            store = await Store.open(config, migrate=False)
            stack.push_async_callback(store.close)
            http = await stack.enter_async_context(metadata_server(config, store))
            local = local_handler(http)
        client = await stack.enter_async_context(AdminClient(config))
        agent = MetadataAgent(config, client, local)
        await agent.start(unix_socket=False)
        stack.push_async_callback(agent.stop)
        announce_ready()
        follow = asyncio.create_task(_follow(agent.inline), name="inline-follow")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([follow, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in (follow, stopped):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if follow.done() and not follow.cancelled() and follow.exception() is not None:
            _log.error("inline worker lost its parent's messages", error=str(follow.exception()))


def main() -> None:
    """Worker entry point: (config, local_api) arrive from the parent on stdin."""
    import uvloop

    from cloudmeta.linux.malloc import fix_mmap_threshold
    from cloudmeta.logs import setup_logging

    config, local_api = read_payload()
    assert isinstance(config, Config)
    setup_logging(config.debug, config.log_format)
    fix_mmap_threshold()
    uvloop.run(_serve(config, bool(local_api)))


if __name__ == "__main__":
    main()
