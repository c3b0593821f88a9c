"""Faults in a real lab (all-in-one + an instance booted with DHCP and cloud-init), under the
request loop from the instance: ``kill -9`` of the all-in-one (``lab up`` restarts it; the new
one adopts namespaces and dnsmasq and re-opens the inline listeners) and of a network's dnsmasq
(the DHCP agent's process monitor respawns it)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
from test_faults import judge, request_loop

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.config import Config
from cloudmeta.lab import cloud, instance
from cloudmeta.lab.state import LabInstance, LabState, load_state, save_state
from cloudmeta.lab.supervise import supervise_all_in_one
from cloudmeta.linux.process import pid_alive

pytestmark = [pytest.mark.root, pytest.mark.soak, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def lab(make_config: Callable[..., Config]) -> AsyncIterator[tuple[Config, LabState]]:
    """A supervised all-in-one, the demo cloud and one booted instance on ``isolated``."""
    admin, metadata = _free_port(), _free_port()
    config = make_config(
        namespace_prefix=f"cmt-{secrets.token_hex(3)}-",
        device_prefix=f"cmt-{secrets.randbelow(90) + 10}",
        admin={"listen": "127.0.0.1", "port": admin},
        admin_url=f"http://127.0.0.1:{admin}",
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        nova_metadata_port=metadata,
        nova_metadata_timeout=3.0,
        enable_isolated_metadata=True,
    )
    state = LabState()
    save_state(config, state)
    client = AdminClient(config)
    watch: asyncio.Task[None] | None = None
    try:
        proc = await cloud.ensure_all_in_one(config, client, state, print)
        assert proc is not None
        watch = asyncio.create_task(
            supervise_all_in_one(
                cloud.aio_config(config),
                state,
                proc,
                lambda p: cloud.wait_all_in_one(config, client, p),
                print,
            )
        )
        await cloud.build_cloud(config, client, state, print)
        net = next(n.id for n in state.networks.values() if n.name == "isolated")
        await cloud.boot_instance(config, client, state, "aio-1", net)
        paths = cloud.instance_paths(config, "aio-1")
        booted = await instance.wait_booted(paths, timeout=90)
        # A fault test on an instance that never booted would judge the wrong thing.
        assert booted == "ok", paths.console.read_text()[-3000:] if paths.console.exists() else ""
        yield config, state
    finally:
        if watch is not None:
            watch.cancel()
        await cloud.down(config, load_state(config) or state, client)
        await client.close()


async def _answers(config: Config) -> bool:
    client = AdminClient(config)
    try:
        await client.revision()
        return True
    except (AdminError, OSError):
        return False
    finally:
        await client.close()


async def test_all_in_one_killed(lab: tuple[Config, LabState]) -> None:
    config, state = lab
    inst: LabInstance = state.instances["aio-1"]
    timeout = config.nova_metadata_timeout + 1.0
    loop = request_loop(inst.namespace, 14.0, timeout)
    await asyncio.sleep(1.0)
    old = state.all_in_one_pid
    assert old is not None
    began = time.time()
    os.kill(old, signal.SIGKILL)
    while state.all_in_one_pid == old or not await _answers(config):
        assert time.time() - began < 60, "the all-in-one was not restarted"
        await asyncio.sleep(0.05)
    ended = time.time()  # the cause ended: a new all-in-one answers
    judge(
        "kill -9 all-in-one (lab up restarts)",
        await loop,
        inst.server_id,
        began,
        ended,
        timeout,
        restart_s=ended - began,
    )


def _dnsmasq_pid(config: Config, network_id: str) -> int | None:
    path = config.state_path / "dhcp" / network_id / "pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def test_dnsmasq_killed(lab: tuple[Config, LabState]) -> None:
    config, state = lab
    inst = state.instances["aio-1"]
    old = _dnsmasq_pid(config, inst.network_id)
    assert old is not None and pid_alive(old), old
    timeout = config.nova_metadata_timeout + 1.0
    loop = request_loop(inst.namespace, 6.0, timeout)
    await asyncio.sleep(1.0)
    began = time.time()
    os.kill(old, signal.SIGKILL)
    while True:
        new = _dnsmasq_pid(config, inst.network_id)
        if new not in (None, old) and pid_alive(new):
            break
        assert time.time() - began < 30, "dnsmasq was not respawned"
        await asyncio.sleep(0.05)
    respawn = time.time() - began
    judge(
        "kill -9 dnsmasq (lab)",
        await loop,
        inst.server_id,
        began,
        began,
        timeout,
        respawn_s=respawn,
        renew_ok=await _renews(config, inst),
    )


async def _renews(config: Config, inst: LabInstance) -> bool:
    """A fresh DHCP exchange from the instance with the respawned dnsmasq: its own address."""
    state_dir = config.state_path / f"cmt-renew-{secrets.token_hex(3)}"
    state_dir.mkdir()
    try:
        await linux.run_dhclient(inst.namespace, "eth0", state_dir=state_dir, timeout=20)
        leases = (state_dir / "dhclient-eth0.leases").read_text()
    finally:
        await linux.cleanup(pid_dir=state_dir)
    assert f"fixed-address {inst.ip};" in leases, leases
    return True
