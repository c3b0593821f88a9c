"""Extra metadata API worker processes: ``[api] metadata_workers = N`` runs N-1 of them.

Each worker is ``python -m cloudmeta.api.workers``: it reads the pickled :class:`Config` from its
stdin, opens its own :class:`Store`, and serves only the metadata API on the parent's port
(SO_REUSEPORT: the kernel spreads connections over the parent's socket and the workers').
The parent keeps the write end of the worker's stdin: when the parent exits, however it exits,
the worker reads EOF and stops. The parent respawns a worker that dies.

Cache invalidation: every worker checks :meth:`Store.change_token` (a revision slot in a file
of ``state_path`` that each committing process of the host overwrites) on every request, so an
admin change is seen by the next request of every worker; writes from other hosts (a shared
PostgreSQL) are seen through the change feed's poll, within ``POLL_INTERVAL`` (0.5 s).

Metrics: each worker runs in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
set to a directory of this pool under ``state_path/metrics``), and the parent's scrape merges
those files into its own figures (:func:`cloudmeta.metrics.render`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import shutil
import signal
import sys
import time
from collections.abc import Callable

from prometheus_client.multiprocess import mark_process_dead

from cloudmeta.config import Config
from cloudmeta.logs import get_logger
from cloudmeta.metrics import watch_worker_files, worker_environment

__all__ = ["WorkerPool", "freeze_startup_heap"]

_log = get_logger("api")
READY = b"READY\n"
_START_TIMEOUT = 30.0
_MAX_BACKOFF = 30.0
_STOP_TIMEOUT = 5.0


class WorkerPool:
    """``count`` metadata worker processes on ``(host, port)``, kept alive until :meth:`close`."""

    def __init__(self, config: Config, host: str, port: int, count: int) -> None:
        api = config.api.model_copy(update={"metadata_listen": host, "metadata_listen_port": port})
        self._payload = pickle.dumps(config.model_copy(update={"api": api}))
        # prometheus_client's multiprocess mode: each worker's metrics in mmap files here,
        # merged into the parent's scrape (the admin API's /metrics). Fresh per pool.
        self._metrics_dir = config.state_path / "metrics" / f"metadata-workers-{os.getpid()}"
        self._unwatch: Callable[[], None] | None = None
        self._closing = False
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every worker and wait until each listens (a worker failing at start raises)."""
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        self._metrics_dir.mkdir(parents=True)
        self._unwatch = watch_worker_files(self._metrics_dir)
        first = [asyncio.create_task(self._spawn(slot)) for slot in range(len(self.processes))]
        try:
            await asyncio.gather(*first)
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._supervise(slot), name=f"metadata-worker-{slot}")
            for slot in range(len(self.processes))
        ]

    async def _spawn(self, slot: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cloudmeta.api.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=worker_environment(self._metrics_dir),
        )
        self.processes[slot] = proc
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
            raise OSError(f"metadata worker {slot} did not start (exit code {code}); see its log")
        _log.info("metadata worker started", slot=slot, pid=proc.pid)

    async def _supervise(self, slot: int) -> None:
        backoff = 0.5
        while True:
            proc = self.processes[slot]
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            # Its counters stay in the sum; its gauges (revisions) leave the minimum.
            mark_process_dead(proc.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
            if self._closing:
                return
            _log.warning("metadata worker exited; respawning", slot=slot, pid=proc.pid, code=code)
            # A worker that keeps dying at once is retried ever more slowly.
            backoff = 0.5 if time.monotonic() - started > 60 else min(backoff * 2, _MAX_BACKOFF)
            while not self._closing:
                await asyncio.sleep(backoff)
                try:
                    await self._spawn(slot)
                    break
                except OSError as exc:
                    _log.error("metadata worker respawn failed", slot=slot, error=str(exc))
                    backoff = min(backoff * 2, _MAX_BACKOFF)

    async def close(self) -> None:
        """Stop the workers: EOF on their stdin, then SIGKILL after a grace period."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        live = [p for p in self.processes if p is not None and p.returncode is None]
        for proc in live:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in live:
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        shutil.rmtree(self._metrics_dir, ignore_errors=True)


def freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, apps, config) out of the cyclic GC's reach: full
    collections then walk only what requests allocate, which keeps them off the p99."""
    gc.collect()
    gc.freeze()


async def _serve_worker(config: Config) -> None:
    from cloudmeta.api.metadata import metadata_server
    from cloudmeta.http import Limits, serve, tcp_sockets
    from cloudmeta.inventory import Store

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the parent decides when the workers stop.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # readable = EOF: the parent is gone
    store = await Store.open(config, migrate=False)
    try:
        async with metadata_server(config, store) as http:
            api = config.api
            sockets = tcp_sockets(api.metadata_listen, api.metadata_listen_port, reuse_port=True)
            listener = await serve(sockets, http, Limits.timeouts(config))
            try:
                freeze_startup_heap()
                sys.stdout.buffer.write(READY)
                sys.stdout.flush()
                await stop.wait()
            finally:
                await listener.close()
    finally:
        await store.close()


def main() -> None:
    """Worker entry point: the config arrives pickled on stdin from the parent API process."""
    import uvloop

    from cloudmeta.logs import setup_logging

    config = pickle.load(sys.stdin.buffer)
    assert isinstance(config, Config)
    setup_logging(config.debug, config.log_format)
    uvloop.run(_serve_worker(config))


if __name__ == "__main__":
    main()
