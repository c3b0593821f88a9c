"""How inventory commands talk to the admin API and print: rich tables for people, JSON for scripts.

Every command runs one coroutine against an :class:`AdminClient`; an :class:`AdminError`
becomes a one-line ``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.config import Config

__all__ = ["addresses_cell", "format_option", "print_list", "print_one", "resolve", "run_client"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def format_option(func: F) -> F:
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts",
    )(func)


def run_client(config: Config, work: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run ``work`` with a client; on failure print one line and exit 1."""

    async def main() -> T:
        async with AdminClient(config) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except AdminError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


async def resolve(client: AdminClient, plural: str, ref: str) -> str:
    """The id of the ``plural`` object whose id or name is ``ref``."""
    objects: list[dict[str, Any]] = (await client.request("GET", f"/v1/{plural}"))[plural]
    for obj in objects:
        if obj["id"] == ref:
            return ref
    named = [obj["id"] for obj in objects if obj.get("name") == ref]
    kind = plural.rstrip("s")
    if not named:
        raise AdminError(404, f"no {kind} with name or id {ref!r}")
    if len(named) > 1:
        raise AdminError(409, f"{len(named)} {plural} are named {ref!r}; give the id")
    return str(named[0])


def addresses_cell(addresses: dict[str, list[dict[str, Any]]]) -> str:
    """A server's ``addresses`` as the openstack CLI's Networks column: ``net=ip, ip; net2=ip``."""
    return "; ".join(
        f"{network}={', '.join(entry['addr'] for entry in entries)}"
        for network, entries in addresses.items()
    )


def _field(key: str, value: Any) -> str:
    """One table cell; a few fields have a compact form of their own."""
    if key == "addresses" and isinstance(value, dict):
        return addresses_cell(value)
    return _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(_cell(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"subnet_id", "ip_address"}:
            return f"{value['ip_address']} ({value['subnet_id']})"
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def print_one(obj: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(obj, indent=2))
        return
    table = Table("Field", "Value", show_lines=False)
    for key, value in obj.items():
        if key != "private_key":
            table.add_row(key, _field(key, value))
    Console(soft_wrap=False).print(table)
    if obj.get("private_key"):
        click.echo(obj["private_key"])


def print_list(objects: Sequence[Any], columns: Sequence[str], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(list(objects), indent=2))
        return
    table = Table(*columns)
    for obj in objects:
        table.add_row(*(_field(c, obj.get(c)) for c in columns))
    Console(soft_wrap=False).print(table)
