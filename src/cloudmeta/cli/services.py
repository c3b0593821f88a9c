"""Service commands of the API side: ``cloudmeta api`` and ``cloudmeta db upgrade``."""

from __future__ import annotations

import asyncio

import click
import uvloop

from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError

__all__ = ["COMMANDS"]


@click.command("api")
@pass_config
def api_command(config: Config) -> None:
    """Run the admin API and the metadata API on the inventory (migrating it first); the
    metadata API in ``[api] metadata_workers`` processes sharing its port."""
    from cloudmeta.api.server import run_api

    try:
        uvloop.run(run_api(config))
    except InventoryError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from exc


@click.group("db")
def db_group() -> None:
    """The inventory database."""


@db_group.command("upgrade")
@pass_config
def db_upgrade(config: Config) -> None:
    """Migrate the inventory database to the latest schema (idempotent)."""
    from cloudmeta.inventory import Store

    async def run() -> int:
        store = await Store.open(config)
        try:
            return await store.revision()
        finally:
            await store.close()

    try:
        revision = asyncio.run(run())
    except InventoryError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"inventory schema is up to date (revision {revision})")


COMMANDS: list[click.Command] = [api_command, db_group]
