"""``cloudmeta db upgrade``: the inventory schema."""

from __future__ import annotations

import asyncio

import click

from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError

__all__ = ["COMMANDS"]


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


COMMANDS: list[click.Command] = [db_group]
