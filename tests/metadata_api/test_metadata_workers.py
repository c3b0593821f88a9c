"""``[api] metadata_workers = 2``: ``cloudmeta api`` and its worker process share the port.

Which process answered a connection is read from ``ss`` (the pid owning the server side), so
the test can hold one keep-alive connection to each process and ask both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from metadata_cloud import Cloud, build_cloud, signed

from cloudmeta.api.metadata.app import MAX_WAITS_PER_INSTANCE
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from support.report import SOAK, record
from support.scrape import delta, scrape, settled

CLOUDMETA = str(Path(sys.executable).with_name("cloudmeta"))
TOKEN = "cmt-admin-token"
REQUESTS = "cloudmeta_metadata_requests_total"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _server_pid(port: int, client_port: int) -> int:
    """The pid holding the server side of the connection from ``client_port``."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        found = re.search(rf":{client_port}\s+users:\(\(\"[^\"]*\",pid=(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no server side for client port {client_port}:\n{out}")


def _listening(port: int) -> set[int]:
    """The pids holding a listening socket on ``port`` (a respawned worker, once it serves)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


async def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15.0  # a liveness bound, far above the ~2 s it takes
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.05)


class Clients:
    """One keep-alive connection (a one-connection session) per server process."""

    def __init__(self, url: str, port: int, headers: dict[str, str]) -> None:
        self.url, self.port, self.headers = url, port, headers
        self.by_pid: dict[int, aiohttp.ClientSession] = {}

    async def connect(self, pids: set[int]) -> None:
        """Open connections until each of ``pids`` holds one (the kernel hashes them)."""
        for _ in range(200):
            if pids <= set(self.by_pid):
                return
            client_port = _free_port()  # our end's port, to find the server side in ss
            connector = aiohttp.TCPConnector(limit=1, local_addr=("127.0.0.1", client_port))
            session = aiohttp.ClientSession(connector=connector)
            async with session.get(self.url + "/openstack", headers=self.headers) as resp:
                assert resp.status == 200
            pid = _server_pid(self.port, client_port)
            if pid in pids and pid not in self.by_pid:
                self.by_pid[pid] = session
            else:
                await session.close()
        raise AssertionError(f"no connection reached every process of {pids}")

    async def drop(self, pid: int) -> None:
        await self.by_pid.pop(pid).close()

    async def request(self, pid: int, method: str, path: str, data: bytes = b"") -> Any:
        session = self.by_pid[pid]
        url = self.url + path
        async with session.request(method, url, headers=self.headers, data=data) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        for session in self.by_pid.values():
            await session.close()


@pytest.fixture
async def cloud_api(
    make_config: Callable[..., Config], state_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Cloud, int, int]]:
    """``cloudmeta api`` with two metadata workers over a small inventory."""
    admin_port, meta_port = _free_port(), _free_port()
    store = await Store.open(make_config())
    try:
        cloud = await build_cloud(store, servers=1)
    finally:
        await store.close()
    toml = tmp_path / "cmt-api.toml"
    toml.write_text(
        f'state_path = "{state_dir}"\nlog_format = "json"\nadmin_token = "{TOKEN}"\n'
        'metadata_proxy_shared_secret = "cmt-test-secret"\n'
        f'[admin]\nlisten = "127.0.0.1"\nport = {admin_port}\n'
        f'[api]\nmetadata_listen = "127.0.0.1"\nmetadata_listen_port = {meta_port}\n'
        "metadata_workers = 2\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")}
    proc = subprocess.Popen(  # noqa: ASYNC220 (the fixture owns it; reads its first lines)
        [CLOUDMETA, "--config", str(toml), "api"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    seen: set[int] = set()
    try:
        assert proc.stdout is not None
        for _ in range(2):  # one "listening" line per app, printed once the workers serve
            assert proc.stdout.readline(), "cloudmeta api exited at start"
        yield proc, cloud, admin_port, meta_port
    finally:
        seen.update(_children(proc.pid))
        proc.kill()
        proc.wait()
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_two_workers_share_the_port_and_the_cache_invalidation(
    cloud_api: tuple[subprocess.Popen[bytes], Cloud, int, int],
) -> None:
    proc, cloud, admin_port, meta_port = cloud_api
    server_id = cloud.servers["a0"]
    [worker] = _children(proc.pid)
    clients = Clients(f"http://127.0.0.1:{meta_port}", meta_port, signed(server_id, cloud.project))
    admin = aiohttp.ClientSession(
        f"http://127.0.0.1:{admin_port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        await clients.connect({proc.pid, worker})
        password = "/openstack/latest/password"
        for pid in (proc.pid, worker):  # each answers, and caches the empty password
            assert await clients.request(pid, "GET", password) == (200, b"")
        # A write in the worker is seen by the parent's next request, and the reverse.
        assert await clients.request(worker, "POST", password, b"cmt-first") == (200, b"")
        assert await clients.request(proc.pid, "GET", password) == (200, b"cmt-first")
        assert await clients.request(proc.pid, "POST", password, b"cmt-again") == (
            409,
            b"409 Conflict\n\nA password is already set for this instance.\n",
        )
        # An admin change is seen by the next request of every process.
        async with admin.delete(f"/v1/servers/{server_id}/password") as resp:
            assert resp.status in (200, 204)
        for pid in (proc.pid, worker):
            assert await clients.request(pid, "GET", password) == (200, b"")
        # A killed worker is respawned and serves (the same inventory).
        os.kill(worker, signal.SIGKILL)
        await clients.drop(worker)
        await _wait(lambda: bool(set(_children(proc.pid)) - {worker}), "a new worker")
        [respawned] = _children(proc.pid)
        # Connections reach it only once it listens (its start is slow on a loaded machine).
        await _wait(lambda: respawned in _listening(meta_port), "the new worker to listen")
        await clients.connect({respawned})
        assert await clients.request(respawned, "GET", password) == (200, b"")
        async with admin.delete(f"/v1/servers/{server_id}") as resp:
            assert resp.status in (200, 204)
        for pid in (proc.pid, respawned):
            status, _ = await clients.request(pid, "GET", "/openstack/latest/meta_data.json")
            assert status == 404
    finally:
        await clients.close()
        await admin.close()
    # The parent's death (even SIGKILL) takes the worker down.
    proc.kill()
    proc.wait()
    await _wait(lambda: not _alive(respawned), "the worker to exit after its parent")


async def test_a_long_poll_in_a_worker_wakes_on_an_admin_write(
    cloud_api: tuple[subprocess.Popen[bytes], Cloud, int, int],
) -> None:
    """The admin API commits in the parent; a poll parked in the worker learns of it from
    the host's change token (not the store's 0.5 s poll): the first within 200 ms, all of
    them under soak."""
    proc, cloud, admin_port, meta_port = cloud_api
    server_id = cloud.servers["a0"]
    [worker] = _children(proc.pid)
    url = f"http://127.0.0.1:{meta_port}"
    headers = signed(server_id, cloud.project)
    doc = "/openstack/latest/meta_data.json"
    # One connection to the worker per wait slot, and one more to see them all taken.
    clients = [Clients(url, meta_port, headers) for _ in range(MAX_WAITS_PER_INSTANCE + 1)]
    admin = aiohttp.ClientSession(
        f"http://127.0.0.1:{admin_port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        for client in clients:
            await client.connect({worker})
        probe, waiters = clients[-1], clients[:-1]
        status, _ = await probe.request(worker, "GET", doc)
        assert status == 200
        async with probe.by_pid[worker].get(url + doc, headers=headers) as resp:
            etag = resp.headers["ETag"]
        wait = f"{doc}?wait_for_change=true&last_etag={etag}&timeout_sec=30"
        polls = [asyncio.create_task(c.request(worker, "GET", wait)) for c in waiters]
        zero = f"{doc}?wait_for_change=true&timeout_sec=0"
        deadline = time.monotonic() + 15.0  # a liveness bound
        while (await probe.request(worker, "GET", zero))[0] != 429:  # all slots taken: parked
            assert time.monotonic() < deadline, "the long-polls never all waited"
        async with admin.patch(
            f"/v1/servers/{server_id}", json={"server": {"metadata": {"cmt-role": "db"}}}
        ) as resp:
            assert resp.status == 200
        acked = time.monotonic()
        latencies = []
        for poll in asyncio.as_completed(polls):
            status, body = await poll
            latencies.append(time.monotonic() - acked)
            assert status == 200 and json.loads(body)["meta"] == {"role": "a", "cmt-role": "db"}
        record(
            "long-poll",
            "wake in a worker after an admin write",
            min_s=min(latencies),
            max_s=max(latencies),
        )
        # Issue 17's 200 ms on the first answer (a wake by the store's 0.5 s poll instead would
        # miss it 3 times in 5); on every parked poll under soak; 10 s (not the 30 s) always.
        assert min(latencies) < 0.2, latencies
        assert max(latencies) < (0.2 if SOAK else 10), latencies
    finally:
        for client in clients:
            await client.close()
        await admin.close()


async def test_the_admin_metrics_count_every_workers_requests(
    cloud_api: tuple[subprocess.Popen[bytes], Cloud, int, int],
) -> None:
    """Multiprocess mode: each process's requests, and a dead worker's, in one scrape."""
    proc, cloud, admin_port, meta_port = cloud_api
    [worker] = _children(proc.pid)
    headers = signed(cloud.servers["a0"], cloud.project)
    clients = Clients(f"http://127.0.0.1:{meta_port}", meta_port, headers)
    url = f"http://127.0.0.1:{admin_port}/metrics"
    ok = {"hop": "api", "kind": "openstack", "status": "200", "mode": ""}
    path = "/openstack/latest/meta_data.json"
    try:
        await clients.connect({proc.pid, worker})
        families, before = await settled(url, REQUESTS)
        assert {"cloudmeta_metadata_requests", "cloudmeta_document_cache_lookups"} <= families
        for pid, times in ((proc.pid, 3), (worker, 2)):
            for _ in range(times):
                assert (await clients.request(pid, "GET", path))[0] == 200
        _, after = await settled(url, REQUESTS)
        assert delta(after, before, REQUESTS, **ok) == 5
        count = "cloudmeta_metadata_request_duration_seconds_count"
        assert delta(after, before, count, hop="api") == 5
        # The worker's revision gauge is merged too (the minimum over the processes).
        assert ("cloudmeta_change_feed_revision", frozenset({("consumer", "document-cache")})) in (
            after
        )
        # A killed worker's counts stay in the sum.
        os.kill(worker, signal.SIGKILL)
        await clients.drop(worker)
        await _wait(lambda: bool(set(_children(proc.pid)) - {worker}), "a new worker")
        _, later = await scrape(url)
        assert delta(later, before, REQUESTS, **ok) == 5
    finally:
        await clients.close()
