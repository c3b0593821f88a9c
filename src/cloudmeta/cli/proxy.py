"""``cloudmeta ns-metadata-proxy``: one network's proxy process (process mode)."""

from __future__ import annotations

from pathlib import Path

import click
import uvloop

from cloudmeta.logs import setup_logging
from cloudmeta.proxy.binds import Bind, parse_bind
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.process import LIMIT_OPTIONS, limits_from, run_ns_metadata_proxy
from cloudmeta.proxy.title import proxy_args, set_process_title

__all__ = ["COMMANDS"]


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
    **limits: float | int | None,
) -> None:
    """One network's (or router's) metadata proxy, run inside its namespace (process mode)."""
    try:
        target = ProxyTarget(network_id=network_id, router_id=router_id)
    except ValueError as exc:
        raise click.UsageError("give exactly one of --network_id or --router_id") from exc
    set_process_title(proxy_args(target, binds, socket_path, debug=debug))
    setup_logging(debug, "json")
    uvloop.run(run_ns_metadata_proxy(target, binds, socket_path, limits_from(limits)))


for _option, _name, _kind in LIMIT_OPTIONS:  # the limits the manager passes (config's)
    ns_metadata_proxy_command = click.option(
        _option, _name, type=_kind, default=None, help=f"Limit {_name} (default: the built-in)."
    )(ns_metadata_proxy_command)

COMMANDS: list[click.Command] = [ns_metadata_proxy_command]
