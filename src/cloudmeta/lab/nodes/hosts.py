"""A multi-node lab's processes: the controller (a private PostgreSQL database, two API hosts)
and each node's agents, all started and kept running by the lab's supervision; a node's loss
(``lab kill-node``) and the teardown of them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

import asyncpg

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.config import Config
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.nodes.fabric import build_underlay
from cloudmeta.lab.nodes.topology import (
    ApiHost,
    Secrets,
    api_config,
    api_hosts,
    database_name,
    node_config,
    node_dir,
    node_prefix,
    node_services,
    plan,
    underlay_namespace,
)
from cloudmeta.lab.state import LabNode, LabState, edit_state, lab_dir, load_state
from cloudmeta.lab.supervise import spawn_cloudmeta, supervise
from cloudmeta.linux.process import cmdline, pid_alive, stop_pid
from cloudmeta.statefiles import ensure_admin_token, shared_secret

__all__ = ["CONTROLLER", "DEFAULT_POSTGRESQL", "down_nodes", "kill_node", "start_nodes"]

DEFAULT_POSTGRESQL = "postgresql://postgres@127.0.0.1:5432"
CONTROLLER = "controller"
Say = Callable[[str], None]


def _secrets(config: Config) -> Secrets:
    return Secrets(ensure_admin_token(config), shared_secret(config))


async def _admin(server: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(f"{server}/postgres", timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise LabError(
            f"PostgreSQL at {server} is unreachable ({exc}); the multi-node lab keeps its "
            "inventory there (`make services` starts it)"
        ) from exc


async def _create_database(server: str, name: str) -> None:
    conn = await _admin(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server: str, name: str) -> None:
    conn = await _admin(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _spawn(
    config: Config, state: LabState, node: str, service: str, service_config: Config
) -> subprocess.Popen[bytes]:
    """``cloudmeta <service>`` (an API host ``api-N`` runs ``cloudmeta api``) for ``node``."""
    command = "api" if node == CONTROLLER else service
    log = lab_dir(config) / "logs" / f"{node}.{service}.log"
    proc = spawn_cloudmeta(service_config, command, log)
    with edit_state(config, state) as record:
        record.nodes[node].services[service] = proc.pid
    return proc


async def _wait_api(config: Config, host: ApiHost, proc: subprocess.Popen[bytes]) -> None:
    """Until the API host's admin API answers (60 s at most)."""
    deadline = time.monotonic() + 60
    async with AdminClient(config) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"{host.name} exited with {proc.returncode}; see the lab's logs")
            with contextlib.suppress(AdminError, OSError):
                await client.revision()
                return
            await asyncio.sleep(0.1)
    raise LabError(f"{host.name} did not answer on {host.admin_url} within 60 s")


async def _no_wait(_: subprocess.Popen[bytes]) -> None:
    return None


def _alive(config: Config, node: str) -> bool:
    current = load_state(config)
    found = current.nodes.get(node) if current else None
    return found is not None and not found.dead


async def start_nodes(
    config: Config,
    state: LabState,
    network_nodes: int,
    compute_nodes: int,
    say: Say,
    *,
    server: str = DEFAULT_POSTGRESQL,
    distributed: bool = True,
) -> list[asyncio.Task[None]]:
    """The controller (database, API hosts), the underlay, every node's agents; the tasks
    supervising them (cancel them before the teardown). ``distributed=False``: metadata the
    way Neutron serves it (through the network nodes), for comparison."""
    nodes = plan(network_nodes, compute_nodes)
    name = database_name(config)
    with edit_state(config, state) as record:
        record.database = name
        record.localports = distributed
        record.nodes = {CONTROLLER: LabNode(name=CONTROLLER, role=CONTROLLER)}
        record.nodes.update({n.name: n for n in nodes})
    await _create_database(server, name)
    url = f"{server}/{name}"
    secrets = _secrets(config)
    tasks: list[asyncio.Task[None]] = []
    hosts = api_hosts(config)
    for host in hosts:
        cfg = api_config(config, host, url, secrets)
        proc = _spawn(config, state, CONTROLLER, host.name, cfg)
        await _wait_api(cfg, host, proc)
        say(f"controller: {host.name} (pid {proc.pid}) metadata API {host.ip}:{host.metadata_port}")

        def respawn(h: ApiHost = host, c: Config = cfg) -> subprocess.Popen[bytes]:
            return _spawn(config, state, CONTROLLER, h.name, c)

        async def ready(p: subprocess.Popen[bytes], h: ApiHost = host, c: Config = cfg) -> None:
            await _wait_api(c, h, p)

        tasks.append(asyncio.create_task(supervise(host.name, proc, respawn, ready, say)))
    say(f"controller: database {name}; admin API {hosts[0].admin_url}")
    await build_underlay(config, nodes)
    say(
        f"underlay {underlay_namespace(config)}: "
        + ", ".join(f"{n.name} {n.underlay_ip}" for n in nodes)
    )
    for node in nodes:
        api = hosts[node.index % len(hosts)]
        cfg = node_config(config, node, api, secrets, distributed=distributed)
        for service in node_services(node):
            proc = _spawn(config, state, node.name, service, cfg)

            def again(
                n: str = node.name, s: str = service, c: Config = cfg
            ) -> subprocess.Popen[bytes]:
                return _spawn(config, state, n, s, c)

            def wanted(n: str = node.name) -> bool:
                return _alive(config, n)

            label = f"{node.name} {service}"
            tasks.append(asyncio.create_task(supervise(label, proc, again, _no_wait, say, wanted)))
        services = ", ".join(node_services(node))
        say(f"{node.name}: {services} (state {node_dir(config, node.name)}, API {api.name})")
    return tasks


def _ours(pid: int) -> bool:
    return pid_alive(pid) and "cloudmeta" in cmdline(pid)


async def kill_node(config: Config, state: LabState, name: str) -> float:
    """What losing host ``name`` does: every process of it killed (``kill -9``), its namespaces
    (its bridges, VXLAN and underlay port with them) gone; the lab does not restart it. The
    moment (``time.time()``) it was gone."""
    with edit_state(config, state) as record:
        node = record.nodes.get(name)
        if node is None or node.role == CONTROLLER:
            raise LabError(f"no node {name} in this lab (its nodes: {', '.join(record.nodes)})")
        node.dead = True
    namespaces = linux.list_namespaces(node_prefix(config, name))
    pids = [p for p in node.services.values() if _ours(p)]
    pids += [p for ns in namespaces for p in linux.namespace_pids(ns)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    at = time.time()
    await linux.cleanup(namespaces=namespaces)
    return at


async def down_nodes(config: Config, state: LabState, server: str = DEFAULT_POSTGRESQL) -> None:
    """Stop every node's agents, then the API hosts; remove every node's namespaces and the
    underlay; drop the database. Idempotent."""
    order = sorted(state.nodes.values(), key=lambda n: n.role == CONTROLLER)
    for node in order:
        await asyncio.gather(*(stop_pid(p, timeout=10) for p in node.services.values() if _ours(p)))
    namespaces = [underlay_namespace(config)]
    for node in state.nodes.values():
        if node.role != CONTROLLER:
            namespaces += linux.list_namespaces(node_prefix(config, node.name))
    await linux.cleanup(namespaces=sorted(set(namespaces)))
    if state.database:
        await _drop_database(server, state.database)
