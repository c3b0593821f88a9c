"""``cloudmeta all-in-one``: API, metadata agent, DHCP agent and L3 agent in one process."""

from __future__ import annotations

from collections.abc import Callable

import click
import uvloop

from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError
from cloudmeta.linux.errors import LinuxError
from cloudmeta.proxy.errors import ProxyError
from cloudmeta.services import Running, ServiceSet, run_until_signal

__all__ = ["COMMANDS"]


def _announce(config: Config) -> Callable[[Running], None]:
    def on_ready(running: Running) -> None:
        for name, (host, port) in running.api_addresses.items():
            click.echo(f"cloudmeta {name} API listening on http://{host}:{port}")
        click.echo(f"metadata agent socket: {config.proxy_socket_path}")
        click.echo(
            f"proxy mode {config.metadata_proxy_mode.value}; force_metadata="
            f"{config.force_metadata}, enable_isolated_metadata={config.enable_isolated_metadata}"
        )
        click.echo(f"state in {config.state_path}; Ctrl-C stops")

    return on_ready


@click.command("all-in-one")
@pass_config
def all_in_one_command(config: Config) -> None:
    """Run every service on one host in one event loop: the admin and metadata APIs on the
    inventory (SQLite in ``state_path`` unless ``[database] connection`` says otherwise), the
    metadata agent on ``metadata_proxy_socket``, and the DHCP and L3 agents with their proxies.
    """
    services = ServiceSet(api=True, metadata_agent=True, dhcp=True, l3=True)
    try:
        uvloop.run(run_until_signal(config, services, _announce(config)))
    except (InventoryError, ProxyError, LinuxError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


COMMANDS: list[click.Command] = [all_in_one_command]
