"""Faults of the services run as their own processes (``cloudmeta agent``, ``cloudmeta api``):
``kill -9`` under the request loop, started again after a pause (systemd's ``Restart=`` in
production, see deploy/), and the time until instances get their document again. Also the size
limits end to end: user-data 65 535 base64 characters, password 1 020 bytes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import META_IP, Chain
from test_faults import one_instance, under_load

from cloudmeta import linux
from cloudmeta.adminclient import AdminError
from cloudmeta.config import ProxyMode
from cloudmeta.lab.childenv import config_env

pytestmark = [pytest.mark.root, pytest.mark.soak]

CLOUDMETA = str(Path(sys.executable).parent / "cloudmeta")
DOWN_FOR = 1.0  # seconds between the kill and the restart


class Services:
    """Service processes a test started; all killed at the end."""

    def __init__(self, chain: Chain, command: str, **env: str) -> None:
        self._env = {**os.environ, **config_env(chain.config), **env}
        self._command = command
        self._log = chain.config.state_path / f"{command}.log"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = linux.spawn([CLOUDMETA, self._command], log_path=self._log, env=self._env)
        self.procs.append(proc)
        return proc

    async def kill(self) -> None:
        proc = self.procs[-1]
        proc.kill()
        await asyncio.to_thread(proc.wait)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def log_tail(self) -> str:
        return self._log.read_text()[-2000:] if self._log.exists() else ""


@contextlib.contextmanager
def services(chain: Chain, command: str, **env: str) -> Iterator[Services]:
    made = Services(chain, command, **env)
    try:
        yield made
    finally:
        made.close()


async def wait_connectable(address: str | tuple[str, int], proc: Services) -> None:
    """Until ``address`` (a unix path or a TCP address) accepts a connection."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(address)
                return
            except OSError:
                pass
        if proc.procs[-1].poll() is not None:
            raise AssertionError(f"the service exited: {proc.log_tail()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"{address} never accepted: {proc.log_tail()}")


@pytest.mark.parametrize(
    "chain", [(ProxyMode.PROCESS, {}), (ProxyMode.HAPROXY, {})], indirect=True, ids=str
)
async def test_agent_process_killed(chain: Chain) -> None:
    """The proxies answer 503 while the agent is gone and reconnect once it is back."""
    assert chain.agent is not None
    await chain.agent.stop()  # the harness's in-process agent makes way for `cloudmeta agent`
    chain.agent = None
    path = str(chain.config.proxy_socket_path)
    with services(chain, "agent") as agent:
        agent.start()
        await wait_connectable(path, agent)

        async def fault(chain: Chain) -> float:
            await agent.kill()
            await asyncio.sleep(DOWN_FOR)
            agent.start()
            await wait_connectable(path, agent)
            return time.time()

        mode = chain.config.metadata_proxy_mode
        # haproxy answers 502 to the one request the agent held when it died.
        allowed = 1 if mode == ProxyMode.HAPROXY else 0
        await under_load(
            chain, f"kill -9 agent process ({mode})", fault, seconds=10, in_flight=allowed
        )


@pytest.mark.parametrize("chain", [(ProxyMode.INLINE, {})], indirect=True, ids=str)
async def test_api_process_killed(chain: Chain) -> None:
    """`cloudmeta api` killed: the agent answers 503 + Retry-After at once, 200 once it is back;
    an admin write acknowledged before the kill is there after it."""
    assert chain.client is not None
    port = chain.config.nova_metadata_port
    await chain.stop_serving("metadata")  # `cloudmeta api` takes over the metadata port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        admin_port = probe.getsockname()[1]
    env = {
        "CLOUDMETA_API__METADATA_LISTEN": "127.0.0.1",
        "CLOUDMETA_API__METADATA_LISTEN_PORT": str(port),
        "CLOUDMETA_API__METADATA_WORKERS": "1",
        "CLOUDMETA_ADMIN__PORT": str(admin_port),
    }
    with services(chain, "api", **env) as api:
        api.start()
        await wait_connectable(("127.0.0.1", port), api)

        async def fault(chain: Chain) -> float:
            assert chain.client is not None
            before = await chain.client.create_network(f"cmt-{chain.tag}-before")
            await api.kill()
            await asyncio.sleep(DOWN_FOR)
            api.start()
            await wait_connectable(("127.0.0.1", port), api)
            assert (await chain.client.get_network(before["id"]))["id"] == before["id"]
            return time.time()

        await under_load(chain, "kill -9 cloudmeta api", fault, seconds=10)


async def _post_password(namespace: str, body: bytes) -> int:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"]
    argv += ["-H", "Content-Type: text/plain", "--data-binary", "@-"]
    argv.append(f"http://{META_IP}/openstack/2013-04-04/password")
    out = await linux.run(argv, namespace=namespace, input=body, check=False, timeout=10)
    return int(out.stdout or 0)


@pytest.mark.parametrize("chain", [(ProxyMode.INLINE, {})], indirect=True, ids=str)
async def test_size_limits_end_to_end(chain: Chain) -> None:
    assert chain.client is not None
    namespace, server_id = await one_instance(chain)
    port = await chain.client.get_port((await chain.client.get_server(server_id))["ports"][0])
    networks = [{"network_id": port["network_id"]}]
    # Nova's limit: 65 535 base64 characters; the longest valid base64 below it is 65 532.
    fits = await chain.client.create_server(
        f"cmt-{chain.tag}-ud", networks, project_id=chain.project_id, user_data="QUJD" * 16383
    )
    assert fits["id"]
    with pytest.raises(AdminError) as refused:
        await chain.client.create_server(
            f"cmt-{chain.tag}-ud2", networks, project_id=chain.project_id, user_data="QUJD" * 16384
        )
    assert refused.value.status == 400, refused.value
    too_long = await _post_password(namespace, b"p" * 1021)
    at_limit = await _post_password(namespace, b"p" * 1020)
    assert (too_long, at_limit) == (400, 200)
    assert await chain.client.get_server_password(server_id) == "p" * 1020
