"""``cloudmeta l3-agent`` (neutron-l3-agent): router namespaces and their metadata path."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click
import uvloop

from cloudmeta.adminclient import AdminClient
from cloudmeta.agent.embedded import start_embedded
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.l3.agent import L3Agent
from cloudmeta.l3.model import interface_name
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.process import ProcessMonitor
from cloudmeta.logs import get_logger
from cloudmeta.proxy.errors import ProxyError

__all__ = ["COMMANDS"]


async def _run_l3_agent(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    monitor = ProcessMonitor(
        interval=config.check_child_processes_interval,
        action=config.check_child_processes_action.value,
    )
    async with AdminClient(config) as client:
        proxies, metadata_agent = await start_embedded(config, client, monitor)
        task = asyncio.create_task(L3Agent(config, client, proxies, monitor).run())
        try:
            await stop.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await monitor.close()
            if metadata_agent is not None:
                await metadata_agent.stop()


@click.command("l3-agent")
@pass_config
def l3_agent_command(config: Config) -> None:
    """Build a namespace per router, route between its subnets, redirect 169.254.169.254:80
    to the router's metadata proxy on ``metadata_port``; follow the admin API's changes.

    Namespaces and proxies stay when the agent stops; a restarted agent adopts them and
    deletes those of routers that are gone.
    """
    try:
        interface_name(config.device_prefix, "0" * 36)  # refuse a too long prefix at once
    except LinuxError as exc:
        raise click.ClickException(str(exc)) from exc
    get_logger("l3").info("starting L3 agent", proxy_mode=str(config.metadata_proxy_mode))
    try:
        uvloop.run(_run_l3_agent(config))
    except ProxyError as exc:
        raise click.ClickException(str(exc)) from exc


COMMANDS: list[click.Command] = [l3_agent_command]
