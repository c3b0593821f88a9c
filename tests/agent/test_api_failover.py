"""The metadata agent with two metadata API hosts (``nova_metadata_host = A,B``), both real
``cloudmeta api`` processes on one PostgreSQL database: kill -9 the host it uses and it moves to
the other within 2 s, answering 503 with Retry-After meanwhile and never a wrong document;
with both dead, 503 with Retry-After; a host back is used again."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from cloudmeta.adminclient import AdminClient
from cloudmeta.agent import MetadataAgent
from cloudmeta.agent.forward import Forwarder
from cloudmeta.config import Config
from cloudmeta.lab.childenv import config_env
from inventory.dbfixtures import pg_url
from support.cli import CLI, free_port

pytestmark = pytest.mark.postgres
__all__ = ["pg_url"]  # the fixture
TOKEN = "cmt-failover-admin-token"
PATH = "/openstack/latest/meta_data.json"


@dataclass
class ApiHost:
    """One ``cloudmeta api`` process: admin on 127.0.0.1:<free>, metadata on <ip>:<port>."""

    config: Config
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.config.admin.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "api"],
                env=env | config_env(self.config),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    async def ready(self) -> None:
        api = self.config.api
        urls = [
            f"{self.admin_url}/openapi.json",
            f"http://{api.metadata_listen}:{api.metadata_listen_port}/",
        ]
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            for url in urls:
                while True:
                    assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            break
                    except aiohttp.ClientError:
                        assert time.monotonic() < deadline, f"{url} never answered"
                        await asyncio.sleep(0.1)


@pytest.fixture
async def hosts(
    make_config: Callable[..., Config], pg_url: str, tmp_path: Path
) -> AsyncIterator[list[ApiHost]]:
    """Two API hosts on one database, on two loopback addresses and one metadata port."""
    net = random.randrange(1, 250)
    port = free_port()
    made = []
    for index in (1, 2):
        config = make_config(
            state_path=tmp_path / f"cmt-api-{index}",
            database={"connection": pg_url},
            admin_token=TOKEN,
            admin={"listen": "127.0.0.1", "port": free_port()},
            api={"metadata_listen": f"127.0.{net}.{index}", "metadata_listen_port": port},
        )
        made.append(ApiHost(config, tmp_path / f"cmt-api-{index}.log"))
    try:
        for host in made:
            host.start()
        for host in made:
            await host.ready()
        yield made
    finally:
        for host in made:
            host.kill()


Ask = Callable[[], Awaitable[tuple[int, str | None, str | None]]]


@dataclass
class Chain:
    ask: Ask
    server_id: str
    first_url: str
    doomed: ApiHost  # the host the agent prefers
    survivor: ApiHost


@pytest.fixture
async def chain(hosts: list[ApiHost], make_config: Callable[..., Config]) -> AsyncIterator[Chain]:
    """A metadata agent on both hosts (its admin API: the one it does not prefer) and a
    server; ``ask()`` is one meta_data.json through the agent's socket."""
    metadata = [h.config.api.metadata_listen for h in hosts]
    base = make_config(
        host="cmt-agent-host",
        nova_metadata_host=",".join(metadata),
        nova_metadata_port=hosts[0].config.api.metadata_listen_port,
        admin_token=TOKEN,
    )
    first_url = Forwarder(base).bases[0]
    doomed = next(h for h in hosts if f"//{h.config.api.metadata_listen}:" in first_url)
    survivor = next(h for h in hosts if h is not doomed)
    config = base.model_copy(update={"admin_url": survivor.admin_url})
    async with AsyncExitStack() as stack:
        admin = AdminClient(config)
        stack.push_async_callback(admin.close)
        network = await admin.create_network("cmt-net")
        await admin.create_subnet(network["id"], "192.0.2.0/24")
        server = await admin.create_server("cmt-vm", [{"network_id": network["id"]}])
        ip = (await admin.get_port(server["ports"][0]))["fixed_ips"][0]["ip_address"]
        agent = MetadataAgent(config, admin)
        await agent.start(unix_socket=True)
        stack.push_async_callback(agent.stop)
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(config.proxy_socket_path))
        )
        stack.push_async_callback(session.close)
        headers = {"X-Forwarded-For": ip, "X-Neutron-Network-ID": network["id"]}

        async def ask() -> tuple[int, str | None, str | None]:
            async with session.get(f"http://metadata{PATH}", headers=headers) as response:
                body = await response.read()
                uuid = json.loads(body)["uuid"] if response.status == 200 else None
                return response.status, uuid, response.headers.get("Retry-After")

        assert (await ask())[:2] == (200, server["id"])
        yield Chain(ask, server["id"], first_url, doomed, survivor)


async def _loop_after(chain: Chain, seconds: float) -> list[tuple[float, float, int]]:
    """Ask for ``seconds``: (sent after the loss, answered after the loss, status) each; every
    answer is the instance's own document or a 503 with Retry-After."""
    lost = time.monotonic()
    seen = []
    while time.monotonic() - lost < seconds:
        sent = time.monotonic() - lost
        status, uuid, retry_after = await chain.ask()
        seen.append((sent, time.monotonic() - lost, status))
        if status == 200:
            assert uuid == chain.server_id  # never another instance's document
        else:
            assert status == 503 and retry_after, (status, retry_after)
        await asyncio.sleep(0.02)
    return seen


async def test_agent_moves_to_the_other_api_host_when_one_dies(chain: Chain) -> None:
    chain.doomed.kill()
    seen = await _loop_after(chain, 4)
    unavailable = [sent for sent, _, status in seen if status != 200]
    assert all(sent < 2.0 for sent in unavailable), unavailable
    assert all(done - sent < 2.0 for sent, done, _ in seen)
    print(f"\n{len(unavailable)} of {len(seen)} answers 503 after killing {chain.first_url}")

    chain.survivor.kill()  # no host left: 503 with Retry-After, quickly
    started = time.monotonic()
    status, _, retry_after = await chain.ask()
    assert status == 503 and retry_after and time.monotonic() - started < 5
    chain.doomed.start()  # the first host back: used again once it answers
    await chain.doomed.ready()
    deadline = time.monotonic() + 10
    while (await chain.ask())[:2] != (200, chain.server_id):
        assert time.monotonic() < deadline, "the restarted host was never used again"
        await asyncio.sleep(0.1)


async def test_agent_moves_off_a_hung_api_host(chain: Chain) -> None:
    """SIGSTOP: the host still accepts connections and answers nothing (as a host that lost
    power holds the agent's pooled connections): the request in flight is cut short and
    answered by the other host, all within 2 s."""
    chain.doomed.signal(signal.SIGSTOP)
    try:
        seen = await _loop_after(chain, 5)
    finally:
        chain.doomed.signal(signal.SIGCONT)
    slowest = max(done - sent for sent, done, _ in seen)
    assert slowest < 2.0, seen[:5]
    assert all(status == 200 for sent, _, status in seen if sent > 2.0)
    print(f"\nhung host {chain.first_url}: slowest answer {slowest:.2f} s, {len(seen)} asked")
