"""Supervised worker processes: the one mechanism behind every pool of cloudmeta.

Two pools use it: the metadata API's (``[api] metadata_workers``, :mod:`cloudmeta.api.workers`)
and the inline metadata workers (``metadata_workers``, :mod:`cloudmeta.inline_workers`).

A worker is ``python -m <module>``, exec'd (never forked). The parent writes the payload (a
pickled object, length-prefixed) on the worker's stdin and keeps that pipe open: further
messages are JSON lines on it, and EOF (the parent gone, however it went, SIGKILL included)
tells the worker to stop. The worker answers on its stdout: ``READY`` once it serves, then one
JSON line per message, ``{"seq": n, ...}`` (its logs go to stderr). A worker that dies is
respawned, ever more slowly while it keeps dying at once; ``on_ready`` runs for every started
worker (the inline pool replays its namespaces there).

Metrics: each worker runs in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set to a directory of this pool under ``state_path/metrics``), and the parent's scrape merges
those files into its own figures (:func:`cloudmeta.metrics.render`).

This module is core: it imports no service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from cloudmeta.logs import get_logger
from cloudmeta.metrics import watch_worker_files, worker_environment

__all__ = [
    "READY",
    "Worker",
    "WorkerGone",
    "WorkerPool",
    "announce_ready",
    "parent_messages",
    "read_payload",
    "reply",
]

_log = get_logger("workers")
READY = b"READY\n"
_HEADER = 4  # bytes of the payload's length, big-endian
_START_TIMEOUT = 30.0
_MAX_BACKOFF = 30.0
_STOP_TIMEOUT = 5.0


class WorkerGone(RuntimeError):
    """The worker exited (or was stopped) before it answered."""


class Worker:
    """One started worker process: its pipes and the messages waiting for an answer."""

    def __init__(self, slot: int, proc: asyncio.subprocess.Process) -> None:
        self.slot = slot
        self.proc = proc
        self._seq = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.gone = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def listen(self) -> None:
        """Read the worker's answers from now on (after its READY line)."""
        self._reader = asyncio.create_task(self._read(), name=f"worker-{self.pid}-answers")

    def send(self, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Write ``message`` now (so that messages keep the order of the calls); the future
        is the worker's answer, or :class:`WorkerGone`."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        stdin = self.proc.stdin
        if self.gone or stdin is None or stdin.is_closing():
            future.set_exception(WorkerGone(f"worker {self.pid} is gone"))
            return future
        self._seq += 1
        try:
            stdin.write(json.dumps({**message, "seq": self._seq}).encode() + b"\n")
        except (OSError, RuntimeError) as exc:  # the pipe broke: the worker is going
            future.set_exception(WorkerGone(f"worker {self.pid}: {exc}"))
            return future
        self._pending[self._seq] = future
        return future

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                try:
                    answer = json.loads(line)
                    future = self._pending.pop(int(answer["seq"]))
                except (ValueError, KeyError, TypeError):
                    _log.warning("worker wrote an unknown line", pid=self.pid, line=line[:200])
                    continue
                if not future.done():
                    future.set_result(answer)
        finally:
            self.gone = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(WorkerGone(f"worker {self.pid} exited"))
            self._pending.clear()

    async def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


OnReady = Callable[[Worker], Awaitable[None]]


class WorkerPool:
    """``count`` processes of ``python -m module`` given ``payload``, kept alive until
    :meth:`close`; ``name`` names the pool in logs and its metrics directory."""

    def __init__(
        self,
        name: str,
        module: str,
        payload: object,
        count: int,
        state_path: Path,
        on_ready: OnReady | None = None,
    ) -> None:
        self.name = name
        self._module = module
        data = pickle.dumps(payload)
        self._payload = len(data).to_bytes(_HEADER, "big") + data
        self._on_ready = on_ready
        # Each worker's metrics in mmap files here, merged into the parent's scrape. Fresh
        # per pool (a previous run's files would add up).
        self._metrics_dir = state_path / "metrics" / f"{name}-{os.getpid()}"
        self._unwatch: Callable[[], None] | None = None
        self._closing = False
        self.workers: list[Worker | None] = [None] * count
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def metrics_dir(self) -> Path:
        return self._metrics_dir

    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return [w.pid for w in self.workers if w is not None and w.proc.returncode is None]

    async def start(self) -> None:
        """Start every worker and wait until each is ready (a worker failing at start raises)."""
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        self._metrics_dir.mkdir(parents=True)
        self._unwatch = watch_worker_files(self._metrics_dir)
        first = [asyncio.create_task(self._spawn(slot)) for slot in range(len(self.workers))]
        try:
            await asyncio.gather(*first)
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._supervise(slot), name=f"{self.name}-{slot}")
            for slot in range(len(self.workers))
        ]

    async def _spawn(self, slot: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=worker_environment(self._metrics_dir),
        )
        worker = Worker(slot, proc)
        self.workers[slot] = worker
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._payload)
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            raise OSError(f"{self.name} {slot} did not start (exit code {code}); see its log")
        worker.listen()
        if self._on_ready is not None:
            await self._on_ready(worker)
        _log.info("worker started", pool=self.name, slot=slot, pid=proc.pid)

    async def _supervise(self, slot: int) -> None:
        backoff = 0.5
        while True:
            worker = self.workers[slot]
            assert worker is not None
            started = time.monotonic()
            code = await worker.proc.wait()
            await worker.stop_reading()
            # Its counters stay in the sum; its live gauges (revisions) leave the minimum.
            mark_process_dead(worker.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
            if self._closing:
                return
            _log.warning(
                "worker exited; respawning", pool=self.name, slot=slot, pid=worker.pid, code=code
            )
            # A worker that keeps dying at once is retried ever more slowly.
            backoff = 0.5 if time.monotonic() - started > 60 else min(backoff * 2, _MAX_BACKOFF)
            while not self._closing:
                await asyncio.sleep(backoff)
                try:
                    await self._spawn(slot)
                    break
                except OSError as exc:
                    _log.error("worker respawn failed", pool=self.name, slot=slot, error=str(exc))
                    backoff = min(backoff * 2, _MAX_BACKOFF)

    async def close(self) -> None:
        """Stop the workers: EOF on their stdin, then SIGKILL after a grace period."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        live = [w for w in self.workers if w is not None and w.proc.returncode is None]
        for worker in live:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        for worker in live:
            try:
                await asyncio.wait_for(worker.proc.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
        for stopped in self.workers:
            if stopped is not None:
                await stopped.stop_reading()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        shutil.rmtree(self._metrics_dir, ignore_errors=True)


# -- the worker's side ------------------------------------------------------------------------


def read_payload() -> Any:
    """The parent's payload, read from stdin unbuffered (what follows are the messages)."""

    def exactly(count: int) -> bytes:
        chunks: list[bytes] = []
        while count:
            chunk = os.read(0, count)
            if not chunk:
                raise EOFError("the parent closed the pipe before the payload was complete")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    size = int.from_bytes(exactly(_HEADER), "big")
    return pickle.loads(exactly(size))  # our own parent's, through a private pipe


def announce_ready() -> None:
    """Tell the parent this worker serves."""
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()


async def parent_messages() -> AsyncIterator[dict[str, Any]]:
    """The parent's messages, in order; ends when the parent closes the pipe (or is gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        message = json.loads(line)
        if isinstance(message, dict):
            yield message


def reply(seq: int, **fields: Any) -> None:
    """Answer the parent's message ``seq``."""
    sys.stdout.buffer.write(json.dumps({**fields, "seq": seq}).encode() + b"\n")
    sys.stdout.flush()
