"""A PostgreSQL backend terminated under the store (a server restart, ``pg_terminate_backend``):
a read is read again on a new connection, and what cannot be answered is a 503 with
Retry-After, never a 500 with a traceback.

The window these tests hold open (see pgrelay.py): asyncpg has read the terminated backend's
FATAL message but not yet the end of its socket. The connection still looks open, the pool's
pre-ping has passed, and the first statement fails with "cannot switch to state 12; another
operation (2) is in progress". State 2 is asyncpg's error-consuming state (an ErrorResponse
arrived while idle), not a second operation: the error the fault test met in the change feed.
On a loaded machine the window is wide (the backend exits well after its FATAL is sent); here
the pool's checkout event kills the backend just after the pre-ping and waits until asyncpg has
read the FATAL, so each run meets it exactly once per armed checkout.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.util.concurrency import await_

from admin.helpers import running_admin
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.http import RETRY_AFTER
from cloudmeta.inventory import Store, projects
from cloudmeta.signing import sign_instance_id
from cloudmeta.statefiles import ensure_admin_token
from inventory.dbfixtures import PG_URL, pg_admin
from inventory.pgrelay import PgRelay, relayed
from support.serving import shipped

pytestmark = pytest.mark.postgres

_STATE_2 = "another operation (2) is in progress"


class BackendKiller:
    """Kills the backend of each of the next ``armed`` connections the pool hands out, right
    after their pre-ping, and returns once asyncpg has read the FATAL (the close held back).
    Checkouts of the store's own background tasks (the change feed's polls) are left alone:
    the armed ones are the requests'."""

    def __init__(self, store: Store, relay: PgRelay, admin: asyncpg.Connection) -> None:
        self._relay = relay
        self._admin = admin
        self.armed = 0
        self.killed = 0
        self.errors: list[str] = []  # every DBAPI error SQLAlchemy saw, as text
        event.listen(store.engine.sync_engine, "checkout", self._checkout)
        event.listen(store.engine.sync_engine, "handle_error", self._error)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith(("metadata-", "inventory-")):
            return
        if self.armed:
            self.armed -= 1
            await_(self._kill(dbapi_connection.driver_connection))

    async def _kill(self, driver: asyncpg.Connection) -> None:
        sock = driver._transport.get_extra_info("socket")  # asyncpg keeps its transport here
        link = self._relay.hold(sock.getsockname()[1])
        await self._admin.execute("SELECT pg_terminate_backend($1)", driver.get_server_pid())
        await link.read_by(sock)
        self.killed += 1

    def _error(self, context: ExceptionContext) -> None:
        self.errors.append(str(context.original_exception))


@pytest.fixture
async def relay() -> AsyncIterator[PgRelay]:
    async with relayed() as running:
        yield running


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    connection = await pg_admin()
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def relayed_config(
    make_config: Callable[..., Config], relay: PgRelay, admin: asyncpg.Connection
) -> AsyncIterator[Config]:
    """A fresh database ``cmt_pgf_*``, reached through the relay."""
    name = f"cmt_pgf_{secrets.token_hex(5)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_URL.format(name=name).replace(":5432/", f":{relay.port}/")
        yield make_config(database={"connection": url})
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_read_on_a_terminated_backend_is_read_again(
    relayed_config: Config, relay: PgRelay, admin: asyncpg.Connection
) -> None:
    store = await Store.open(relayed_config)
    try:
        killer = BackendKiller(store, relay, admin)
        await store.transact(lambda tx: projects.create_project(tx, "cmt-pgf-project"))
        for read in (store.revision, lambda: store.changes_since(0)):
            killer.armed = 1
            await read()
        revision, changes = await store.changes_since(0)
        assert killer.killed == 2
        assert sum(_STATE_2 in e for e in killer.errors) == 2, killer.errors
        assert revision == 1 and changes and changes[0].kind == "project"
    finally:
        await store.close()


async def test_the_admin_api_answers_503_while_the_database_is_lost(
    relayed_config: Config,
    relay: PgRelay,
    admin: asyncpg.Connection,
    capfd: pytest.CaptureFixture[str],
) -> None:
    stores: list[Store] = []
    async with running_admin(relayed_config, stores) as (url, client):
        killer = BackendKiller(stores[0], relay, admin)
        await client.create_network("cmt-pgf-before")
        headers = {"Authorization": f"Bearer {ensure_admin_token(relayed_config)}"}
        changes = f"{url}/v1/changes?since=0&timeout=0"
        async with aiohttp.ClientSession(headers=headers) as http:
            killer.armed = 2  # the read, and the one time it is read again
            async with http.get(changes) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"] == RETRY_AFTER
                assert (await response.json())["error"]["code"] == 503
            killer.armed = 1  # a write is never repeated: its outcome is unknown
            network = {"network": {"name": "cmt-pgf-after"}}
            async with http.post(f"{url}/v1/networks", json=network) as response:
                assert response.status == 503, await response.text()
                assert response.headers["Retry-After"] == RETRY_AFTER
            async with http.get(changes) as response:  # and back by itself
                assert response.status == 200, await response.text()
                kinds = [c["kind"] for c in (await response.json())["changes"]]
                assert kinds.count("network") == 1, kinds  # the one before, not the refused one
    assert killer.killed == 3
    assert sum(_STATE_2 in e for e in killer.errors) == 3, killer.errors
    captured = capfd.readouterr()
    assert "unexpected error" not in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


async def test_the_metadata_api_answers_503_while_the_database_is_lost(
    relayed_config: Config,
    relay: PgRelay,
    admin: asyncpg.Connection,
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with AsyncExitStack() as stack:
        store = await Store.open(relayed_config)
        stack.push_async_callback(store.close)
        admin_port = await stack.enter_async_context(shipped(relayed_config, store, "admin"))
        meta_port = await stack.enter_async_context(shipped(relayed_config, store, "metadata"))
        client = AdminClient(relayed_config, url=f"http://127.0.0.1:{admin_port}")
        stack.push_async_callback(client.close)
        network = await client.create_network("cmt-pgf-net")
        await client.create_subnet(network["id"], "192.0.2.0/24")
        server = await client.create_server("cmt-pgf-vm", [{"network_id": network["id"]}])
        port = await client.get_port(server["ports"][0])
        headers = {
            "X-Instance-ID": server["id"],
            "X-Tenant-ID": server["project_id"],
            "X-Instance-ID-Signature": sign_instance_id("cmt-test-secret", server["id"]),
            "X-Forwarded-For": port["fixed_ips"][0]["ip_address"],
        }
        url = f"http://127.0.0.1:{meta_port}/openstack/latest/meta_data.json"
        killer = BackendKiller(store, relay, admin)
        http = await stack.enter_async_context(aiohttp.ClientSession(headers=headers))
        killer.armed = 2  # the first read the request makes, and the one time it is read again
        async with http.get(url) as response:
            assert response.status == 503, await response.text()
            assert response.headers["Retry-After"] == RETRY_AFTER
        async with http.get(url) as response:  # and back by itself
            assert response.status == 200, await response.text()
            assert (await response.json())["uuid"] == server["id"]
    assert killer.killed == 2
    assert sum(_STATE_2 in e for e in killer.errors) == 2, killer.errors
    captured = capfd.readouterr()
    assert "metadata request failed" not in captured.out + captured.err  # its 500
    assert "Traceback" not in captured.out + captured.err
