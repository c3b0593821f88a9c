"""Extra metadata API worker processes: ``[api] metadata_workers = N`` runs N-1 of them.

Each worker is ``python -m cloudmeta.api.workers`` started by :class:`cloudmeta.workerpool.
WorkerPool` (the one supervised-worker mechanism: payload on stdin, READY line, respawn with a
backoff, EOF on stdin = parent gone, prometheus multiprocess directory): it receives the
:class:`Config`, opens its own :class:`Store`, and serves only the metadata API on the parent's
port (SO_REUSEPORT: the kernel spreads connections over the parent's socket and the workers').

Cache invalidation: every worker checks :meth:`Store.change_token` (a revision slot in a file
of ``state_path`` that each committing process of the host overwrites) on every request, so an
admin change is seen by the next request of every worker; writes from other hosts (a shared
PostgreSQL) are seen through the change feed's poll, within ``POLL_INTERVAL`` (0.5 s).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

from cloudmeta.config import Config
from cloudmeta.workerpool import WorkerPool, announce_ready, read_payload

__all__ = ["api_worker_pool", "freeze_startup_heap"]


def api_worker_pool(config: Config, host: str, port: int, count: int) -> WorkerPool:
    """``count`` metadata API worker processes on ``(host, port)`` (start, then close)."""
    api = config.api.model_copy(update={"metadata_listen": host, "metadata_listen_port": port})
    payload = config.model_copy(update={"api": api})
    return WorkerPool("metadata-workers", __name__, payload, count, config.state_path)


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
    # The parent sends nothing after the payload: readable = EOF, the parent is gone.
    loop.add_reader(sys.stdin.fileno(), stop.set)
    store = await Store.open(config, migrate=False)
    try:
        async with metadata_server(config, store) as http:
            api = config.api
            sockets = tcp_sockets(api.metadata_listen, api.metadata_listen_port, reuse_port=True)
            listener = await serve(sockets, http, Limits.timeouts(config))
            try:
                freeze_startup_heap()
                announce_ready()
                await stop.wait()
            finally:
                await listener.close()
    finally:
        await store.close()


def main() -> None:
    """Worker entry point: the config arrives from the parent API process on stdin."""
    import uvloop

    from cloudmeta.logs import setup_logging

    config = read_payload()
    assert isinstance(config, Config)
    setup_logging(config.debug, config.log_format)
    uvloop.run(_serve_worker(config))


if __name__ == "__main__":
    main()
