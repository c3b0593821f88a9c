"""The cloud under test, started the product's way: ``cloudmeta api`` / ``cloudmeta dhcp-agent``
as child processes configured through ``CLOUDMETA_*`` variables, plus a small inventory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ADMIN_TOKEN, SECRET, BenchError, free_port

CLOUDMETA = str(Path(sys.executable).with_name("cloudmeta"))
API_WORKERS = 2  # one per core of the target machine ([api] metadata_workers)


def settings(state: Path, **extra: Any) -> dict[str, Any]:
    """The common options of every service of one bench cloud."""
    return {
        "state_path": state,
        "log_format": "json",
        "metadata_proxy_shared_secret": SECRET,
        "admin_token": ADMIN_TOKEN,
        **extra,
    }


def env_of(options: dict[str, Any]) -> dict[str, str]:
    """``CLOUDMETA_*`` variables for ``options`` (sections as nested dicts, ``__`` between)."""
    env: dict[str, str] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            for sub, inner in env_of(value).items():
                env[f"{key.upper()}__{sub}"] = inner
        else:
            env[key.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def config_of(options: dict[str, Any]) -> Any:
    from cloudmeta.config import Config

    return Config(**options)


@dataclass
class Service:
    """One ``cloudmeta <command>`` child in its own session; ``stop()`` ends the whole group."""

    command: str
    options: dict[str, Any]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")}
        env.update({f"CLOUDMETA_{k}": v for k, v in env_of(self.options).items()})
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [CLOUDMETA, self.command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise BenchError(f"cloudmeta {self.command} exited; its log ends:\n{tail}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        for _ in range(100):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


async def wait_http(url: str, service: Service | None = None, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        if service is not None:
            service.check()
        try:
            await asyncio.to_thread(get, url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer within {timeout:g} s") from None
            await asyncio.sleep(0.1)


@dataclass
class Api:
    """``cloudmeta api`` on free loopback ports; ``client`` is an AdminClient on it."""

    options: dict[str, Any]
    service: Service
    admin_port: int
    metadata_port: int
    client: Any = None
    closers: list[Any] = field(default_factory=list)

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.metadata_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def agent_options(self, **extra: Any) -> dict[str, Any]:
        """Options for the agents talking to this API."""
        base = {k: v for k, v in self.options.items() if k not in ("api", "admin", "database")}
        return {
            **base,
            "admin_url": self.admin_url,
            "nova_metadata_port": self.metadata_port,
            **extra,
        }

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        await self.service.stop()


async def start_api(
    state: Path, database: str = "", workers: int = API_WORKERS, *, metrics: bool = True
) -> Api:
    """Start ``cloudmeta api`` (admin + metadata) and wait until both answer; ``metrics``
    false is the metrics' baseline (``metrics_enabled = false``)."""
    from cloudmeta.adminclient import AdminClient

    admin_port, metadata_port = free_port(), free_port()
    options = settings(
        state,
        admin={"listen": "127.0.0.1", "port": admin_port},
        api={
            "metadata_listen": "127.0.0.1",
            "metadata_listen_port": metadata_port,
            "metadata_workers": workers,
        },
        database={"connection": database},
        metrics_enabled=metrics,
    )
    service = Service("api", options, state / "api.log").start()
    api = Api(options, service, admin_port, metadata_port)
    try:
        await wait_http(f"{api.admin_url}/v1/projects", service)
        await wait_http(f"{api.metadata_url}/", service)
        api.client = AdminClient(url=api.admin_url, token=ADMIN_TOKEN)
    except BaseException:
        await api.close()
        raise
    return api


def signed_headers(instance_id: str, project_id: str, ip: str) -> dict[str, str]:
    """What the metadata agent adds in front of the API."""
    from cloudmeta.api.metadata.identity import sign_instance_id

    return {
        "X-Instance-ID": instance_id,
        "X-Tenant-ID": project_id,
        "X-Instance-ID-Signature": sign_instance_id(SECRET.encode(), instance_id),
        "X-Forwarded-For": ip,
    }


async def small_inventory(api: Api, servers: int, cidr: str = "198.51.100.0/24") -> Any:
    """A project, a network and ``servers`` servers with user data; returns the first server."""
    project = await api.client.create_project(f"cmt-bench-{os.getpid()}-{free_port()}")
    net = await api.client.create_network("cmt-bench", project_id=project["id"])
    await api.client.create_subnet(net["id"], cidr, project_id=project["id"])
    first = None
    for i in range(servers):
        server = await api.client.create_server(
            f"cmt-bench-{i}",
            [{"network_id": net["id"]}],
            project_id=project["id"],
            user_data="I2Nsb3VkLWNvbmZpZwo=",
            metadata={"role": "bench", "index": str(i)},
        )
        first = first or server
    assert first is not None
    port = await api.client.get_port(first["ports"][0])
    return first, project["id"], net["id"], port["fixed_ips"][0]["ip_address"]
