"""Run any set of cloudmeta's services in one process and one event loop.

``cloudmeta all-in-one`` is every service at once on the embedded SQLite store; the DHCP and L3
agents started alone use the same runner with one service each. One loop rather than supervised
children: the agents are idle between changes, the inline proxies must share the metadata
agent's loop anyway, and one process is one pid to watch, one log and the smallest footprint.
The exceptions are opt-in: ``[api] metadata_workers = N`` adds N-1 metadata API processes on
the same port (see :mod:`cloudmeta.api.workers`), started and stopped with the API here, and
``metadata_workers = N`` (inline mode) adds N-1 processes serving the inline listeners beside
this one's (:mod:`cloudmeta.inline_workers`), started before the DHCP and L3 agents so that they
follow every listener those open.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudmeta.adminclient import AdminClient, AgentReporter
from cloudmeta.agent.embedded import start_embedded
from cloudmeta.config import Config, ProxyMode
from cloudmeta.http import Limits, QuietServer, tcp_sockets
from cloudmeta.http import serve as serve_http
from cloudmeta.linux.process import ProcessMonitor
from cloudmeta.logs import get_logger
from cloudmeta.metrics import metrics_handler
from cloudmeta.proxy.manager import MetadataProxyManager
from cloudmeta.scheduler import AGENT_TYPE_METADATA

if TYPE_CHECKING:
    from cloudmeta.dhcp import DhcpAgent
    from cloudmeta.inline_workers import InlineWorkers
    from cloudmeta.l3.agent import L3Agent

__all__ = ["Running", "ServiceFailed", "ServiceSet", "run_until_signal", "running_services"]

_log = get_logger("services")


class ServiceFailed(RuntimeError):
    """A service's task ended while the process was meant to keep serving."""


@dataclass(frozen=True)
class ServiceSet:
    """Which services this process runs."""

    api: bool = False
    metadata_agent: bool = False
    dhcp: bool = False
    l3: bool = False


@dataclass
class Running:
    """What a caller (the CLI, a test) may want from running services."""

    api_addresses: dict[str, tuple[str, int]]
    proxies: MetadataProxyManager | None
    tasks: list[asyncio.Task[None]]
    metrics_address: tuple[str, int] | None = None  # where metrics_listen bound
    inline_workers: InlineWorkers | None = None  # metadata_workers > 1 in inline mode
    dhcp: DhcpAgent | None = None
    l3: L3Agent | None = None


@asynccontextmanager
async def running_services(config: Config, services: ServiceSet) -> AsyncIterator[Running]:
    """Start ``services`` in dependency order; stop them in reverse when the block ends."""
    async with AsyncExitStack() as stack:
        addresses: dict[str, tuple[str, int]] = {}
        servers: dict[str, QuietServer] = {}
        if services.api:
            from cloudmeta.api.server import serve

            addresses = await stack.enter_async_context(serve(config, servers=servers))
        running = Running(addresses, None, [])
        running.metrics_address = await _serve_metrics(stack, config)
        if not (services.metadata_agent or services.dhcp or services.l3):
            yield running
            return
        client = await stack.enter_async_context(AdminClient(config))
        monitor = ProcessMonitor(
            interval=config.check_child_processes_interval,
            action=config.check_child_processes_action.value,
        )
        stack.push_async_callback(monitor.close)
        # The metadata API of this process answers this process's agent in-process.
        local = servers.get("metadata")
        in_process = None
        if local is not None:
            from cloudmeta.api.metadata import local_api

            in_process = local_api(local)
        proxies, agent = await start_embedded(
            config,
            client,
            monitor,
            unix_socket=services.metadata_agent,
            local_api=in_process,
        )
        if agent is not None:
            stack.push_async_callback(agent.stop)
            if config.metadata_proxy_mode is ProxyMode.INLINE and config.metadata_workers > 1:
                from cloudmeta.inline_workers import InlineWorkers

                pool = InlineWorkers(
                    config, config.metadata_workers - 1, local_api=local is not None
                )
                await pool.start()
                # Stopped before the agent: its listeners' removal at exit is not published.
                stack.push_async_callback(pool.close)
                agent.inline.followers = pool
                running.inline_workers = pool
        running.proxies = proxies
        workers: list[
            tuple[str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Awaitable[None]]]
        ] = []
        if services.metadata_agent:
            reporter = AgentReporter(
                client,
                AGENT_TYPE_METADATA,
                config.host,
                config.report_interval,
                {
                    "metadata_proxy_socket": str(config.proxy_socket_path),
                    "nova_metadata_host": config.nova_metadata_host,
                    "nova_metadata_port": config.nova_metadata_port,
                },
            )
            workers.append(("metadata-report", reporter.run, _nothing))
        if services.dhcp:
            from cloudmeta.dhcp import DhcpAgent

            dhcp = running.dhcp = DhcpAgent(config, client, proxies, monitor)
            workers.append(("dhcp-agent", dhcp.run, dhcp.close))
        if services.metadata_agent and config.distributed_metadata:
            from cloudmeta.agent.localport import LocalportAgent

            localport = LocalportAgent(config, client, proxies)
            workers.append(("localport", localport.run, localport.close))
        if services.l3:
            from cloudmeta.l3.agent import L3Agent

            l3 = running.l3 = L3Agent(config, client, proxies, monitor)
            workers.append(("l3-agent", l3.run, l3.close))
        for name, run, close in workers:
            stack.push_async_callback(close)
            task = asyncio.create_task(run(), name=name)
            stack.push_async_callback(_cancel, task)
            running.tasks.append(task)
        _log.info("services started", **{k: v for k, v in vars(services).items()})
        yield running


async def _serve_metrics(stack: AsyncExitStack, config: Config) -> tuple[str, int] | None:
    """``GET /metrics`` on ``metrics_listen`` (for processes without the admin API's port),
    through the one serving stack; its bound address, or None when off."""
    wanted = config.metrics_address
    if wanted is None:
        return None
    listener = await serve_http(
        tcp_sockets(*wanted), metrics_handler, Limits.timeouts(config), name="metrics"
    )
    stack.push_async_callback(listener.close)
    host, port = listener.addresses[0][:2]  # type: ignore[index]
    _log.info("metrics listening", host=host, port=port)
    return str(host), int(port)


async def _nothing() -> None:
    """No clean-up (a reporter leaves nothing behind)."""


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_until_signal(
    config: Config, services: ServiceSet, on_ready: Callable[[Running], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, or until one service's task ends by itself (an error)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_services(config, services) as running:
        if on_ready is not None:
            on_ready(running)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *running.tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        failed = [task for task in running.tasks if task.done()]
        for task in failed:
            error = None if task.cancelled() else task.exception()
            _log.error(
                "service failed",
                service=task.get_name(),
                error=str(error) if error is not None else "ended by itself",
            )
    if failed:
        # A non-zero exit, so that systemd's Restart=on-failure and the lab's supervisor
        # restart the process (a clean exit would read as a deliberate stop).
        names = ", ".join(task.get_name() for task in failed)
        raise ServiceFailed(f"service ended unexpectedly: {names}")
