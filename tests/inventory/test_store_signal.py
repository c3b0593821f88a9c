"""``Store.change_token``: the query-free change signal shared by the processes of a host."""

from __future__ import annotations

import secrets
from pathlib import Path

from cloudmeta.config import Config
from cloudmeta.inventory import Store, projects
from cloudmeta.inventory.database import create_engine, upgrade
from cloudmeta.inventory.store import REVISION_FILE


async def _write(store: Store) -> None:
    await store.transact(lambda tx: projects.create_project(tx, f"cmt-{secrets.token_hex(3)}"))


async def test_token_changes_on_writes_of_this_and_other_stores(
    store: Store, db_config: Config
) -> None:
    other = await Store.open(db_config)  # stands for a second process of the host
    try:
        before = store.change_token()
        assert other.change_token() == before
        await _write(other)
        after = store.change_token()
        assert after != before
        assert after == other.change_token() == await store.revision()
        await _write(store)
        assert store.change_token() not in (before, after)
    finally:
        await other.close()


async def test_token_without_a_revision_file_is_local(tmp_path: Path) -> None:
    missing = tmp_path / "cmt-absent" / REVISION_FILE  # its directory does not exist
    store = Store(create_engine(f"sqlite:///{tmp_path / 'cmt.sqlite'}"), missing)
    try:
        await upgrade(store.engine)
        before = store.change_token()
        await _write(store)
        assert store.change_token() != before
    finally:
        await store.close()
