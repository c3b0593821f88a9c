"""``cloudmeta dhcp-agent`` (neutron-dhcp-agent): qdhcp namespaces, dnsmasq, metadata via DHCP."""

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
from cloudmeta.dhcp import DhcpAgent
from cloudmeta.linux.process import ProcessMonitor
from cloudmeta.logs import get_logger
from cloudmeta.proxy.errors import ProxyError

__all__ = ["COMMANDS"]


async def _run_dhcp_agent(config: Config) -> None:
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
        agent = DhcpAgent(config, client, proxies, monitor)
        task = asyncio.create_task(agent.run(), name="dhcp-agent")
        done = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            done.cancel()
            await agent.close()
            await monitor.close()
            if metadata_agent is not None:
                await metadata_agent.stop()


@click.command("dhcp-agent")
@pass_config
def dhcp_agent_command(config: Config) -> None:
    """Serve DHCP for every network with a DHCP subnet: a ``qdhcp-<network>`` namespace, a DHCP
    port and a dnsmasq; with ``force_metadata`` (or ``enable_isolated_metadata`` on subnets
    without a router) also 169.254.169.254 on that port, the option 121 route to it and a
    metadata proxy; follow the admin API's changes.

    dnsmasq processes stay when the agent stops; a restarted agent adopts the healthy ones.
    """
    get_logger("dhcp").info(
        "starting DHCP agent",
        force_metadata=config.force_metadata,
        enable_isolated_metadata=config.enable_isolated_metadata,
        proxy_mode=str(config.metadata_proxy_mode),
    )
    try:
        uvloop.run(_run_dhcp_agent(config))
    except ProxyError as exc:
        raise click.ClickException(str(exc)) from exc


COMMANDS: list[click.Command] = [dhcp_agent_command]
