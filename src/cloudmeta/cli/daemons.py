"""The long-running services: ``all-in-one``, ``agent``, ``dhcp-agent`` and ``l3-agent``.

Each is the same runner (:mod:`cloudmeta.services`) with a different set of services, so they
start, log, stop on SIGTERM and report errors the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import uvloop

from cloudmeta.adminclient import AdminClient
from cloudmeta.cli.inventory_output import format_option, print_list, run_client
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.malloc import fix_mmap_threshold
from cloudmeta.proxy.errors import ProxyError
from cloudmeta.services import Running, ServiceFailed, ServiceSet, run_until_signal

__all__ = ["COMMANDS"]


def _announce(config: Config) -> Callable[[Running], None]:
    def on_ready(running: Running) -> None:
        for name, (host, port) in running.api_addresses.items():
            click.echo(f"cloudmeta {name} API listening on http://{host}:{port}")
        if running.proxies is None:
            return
        click.echo(
            f"metadata agent socket {config.proxy_socket_path}; proxy mode "
            f"{config.metadata_proxy_mode.value}; force_metadata={config.force_metadata}, "
            f"enable_isolated_metadata={config.enable_isolated_metadata}; "
            f"state in {config.state_path}; Ctrl-C stops"
        )

    return on_ready


def _check_names(config: Config) -> None:
    """Refuse a device prefix too long for Linux's 15-character link names, at start."""
    from cloudmeta.l3.model import interface_name

    interface_name(config.device_prefix, "0" * 36)


def _serve(config: Config, services: ServiceSet, announce: bool) -> None:
    # Big temporary buffers (the netlink loop's 256 KiB datagram reads) unmapped at once,
    # not left in the heap: the agents' memory per served network (cloudmeta.linux.malloc).
    fix_mmap_threshold()
    try:
        if services.dhcp or services.l3:
            _check_names(config)
        uvloop.run(run_until_signal(config, services, _announce(config) if announce else None))
    except (InventoryError, ProxyError, LinuxError, ServiceFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


def _service_command(
    name: str, services: ServiceSet, doc: str, *, announce: bool = False
) -> click.Command:
    @click.command(name, help=doc)
    @pass_config
    def command(config: Config) -> None:
        _serve(config, services, announce)

    return command


@click.group("agent", invoke_without_command=True)
@click.pass_context
def agent_group(ctx: click.Context) -> None:
    """Run the metadata agent (neutron-metadata-agent) on the unix socket
    metadata_proxy_socket, for process and haproxy mode proxies; inline listeners live in the
    process of the DHCP/L3 agent that owns them. With distributed_metadata (a compute node) it
    also keeps a qmeta-<network> localport per network holding 169.254.169.254 for the node's
    own instances, and their anti-spoofing rules. `agent list` shows the registered agents."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(_run_metadata_agent)


@pass_config
def _run_metadata_agent(config: Config) -> None:
    _serve(config, ServiceSet(metadata_agent=True), False)


@agent_group.command("list")
@click.option("--agent-type", default=None, help='only this type, e.g. "DHCP agent"')
@click.option("--host", default=None, help="only agents of this host")
@format_option
@pass_config
def agent_list(config: Config, agent_type: str | None, host: str | None, fmt: str) -> None:
    """List agents as `openstack network agent list`: type, host, alive, and the networks
    (DHCP agents) and routers (L3 agents) each hosts."""
    filters = {k: v for k, v in (("agent_type", agent_type), ("host", host)) if v}

    async def work(client: AdminClient) -> Any:
        return await client.list_agents(**filters)

    agents = run_client(config, work)
    if fmt == "table":
        agents = [{**a, "alive": ":-)" if a["alive"] else "XXX"} for a in agents]
    print_list(agents, ["id", "agent_type", "host", "alive", "networks", "routers"], fmt)


COMMANDS: list[click.Command] = [
    _service_command(
        "api",
        ServiceSet(api=True),
        """Run the admin API and the metadata API on the inventory (migrating it first); the
        metadata API in [api] metadata_workers processes sharing its port.""",
        announce=True,
    ),
    _service_command(
        "all-in-one",
        ServiceSet(api=True, metadata_agent=True, dhcp=True, l3=True),
        """Run every service on one host in one event loop: the admin and metadata APIs on the
        inventory (SQLite in state_path unless [database] connection says otherwise), the
        metadata agent on metadata_proxy_socket, and the DHCP and L3 agents with their
        proxies.""",
        announce=True,
    ),
    agent_group,
    _service_command(
        "dhcp-agent",
        ServiceSet(dhcp=True),
        """Serve DHCP for every network with a DHCP subnet: a qdhcp-<network> namespace, a DHCP
        port and a dnsmasq; with force_metadata (or enable_isolated_metadata on subnets without
        a router) also 169.254.169.254 on that port, the option 121 route to it and a metadata
        proxy. dnsmasq processes stay when the agent stops; a restarted agent adopts them.""",
    ),
    _service_command(
        "l3-agent",
        ServiceSet(l3=True),
        """Build a namespace per router, route between its subnets, redirect
        169.254.169.254:80 to the router's metadata proxy on metadata_port. Namespaces and
        proxies stay when the agent stops; a restarted agent adopts them.""",
    ),
]
