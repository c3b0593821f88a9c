"""``cloudmeta agent`` (neutron-metadata-agent) and ``cloudmeta ns-metadata-proxy``."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click
import uvloop

from cloudmeta.adminclient import AdminClient
from cloudmeta.agent import MetadataAgent
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.logs import get_logger, setup_logging
from cloudmeta.proxy.binds import Bind, parse_bind
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.process import run_ns_metadata_proxy

__all__ = ["COMMANDS"]


async def _run_agent(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AdminClient(config) as client:
        agent = MetadataAgent(config, client)
        await agent.start()
        try:
            await stop.wait()
        finally:
            await agent.stop()


@click.command("agent")
@pass_config
def agent_command(config: Config) -> None:
    """Run the metadata agent on the unix socket ``metadata_proxy_socket``.

    It serves the process and haproxy mode proxies; inline listeners live in the process of
    the DHCP/L3 agent that owns them (``cloudmeta all-in-one``).
    """
    get_logger("agent").info("starting metadata agent", socket=str(config.proxy_socket_path))
    uvloop.run(_run_agent(config))


def _parse_binds(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> list[Bind]:
    try:
        return [parse_bind(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("ns-metadata-proxy")
@click.option("--network_id", "network_id", default=None, help="Network this proxy serves.")
@click.option("--router_id", "router_id", default=None, help="Router this proxy serves.")
@click.option(
    "--bind",
    "binds",
    multiple=True,
    required=True,
    callback=_parse_binds,
    help="ADDR:PORT or [V6ADDR%IFACE]:PORT to listen on; repeatable.",
)
@click.option(
    "--metadata_proxy_socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The metadata agent's unix socket.",
)
@click.option("--debug", is_flag=True, default=False)
def ns_metadata_proxy_command(
    network_id: str | None,
    router_id: str | None,
    binds: list[Bind],
    socket_path: Path,
    debug: bool,
) -> None:
    """One network's (or router's) metadata proxy, run inside its namespace (process mode)."""
    try:
        target = ProxyTarget(network_id=network_id, router_id=router_id)
    except ValueError as exc:
        raise click.UsageError("give exactly one of --network_id or --router_id") from exc
    setup_logging(debug, "json")
    uvloop.run(run_ns_metadata_proxy(target, binds, socket_path))


COMMANDS: list[click.Command] = [agent_command, ns_metadata_proxy_command]
