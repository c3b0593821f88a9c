"""A process-mode proxy shows itself as ``ns-metadata-proxy --network_id <id> ...`` (as
Neutron's does), and the manager still recognises its children by that title."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import pytest
from harness import META_IP, curl, start_chain

from cloudmeta import linux
from cloudmeta.config import ProxyMode
from cloudmeta.linux.process import cmdline
from cloudmeta.proxy import MetadataProxyManager, ProxyTarget
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.title import proxy_args, target_marker, title_of


def test_title_keeps_every_option_after_the_name() -> None:
    target = ProxyTarget(router_id="cmt-r")
    args = proxy_args(
        target, [Bind(META_IP, 80), Bind("fe80::a9fe:a9fe", 80, "cmt-x")], Path("/run/a b")
    )
    assert args == [
        "--router_id",
        "cmt-r",
        "--bind",
        "169.254.169.254:80",
        "--bind",
        "[fe80::a9fe:a9fe%cmt-x]:80",
        "--metadata_proxy_socket",
        "/run/a b",
    ]
    assert title_of(args) == (
        "ns-metadata-proxy --router_id cmt-r --bind 169.254.169.254:80"
        " --bind '[fe80::a9fe:a9fe%cmt-x]:80' --metadata_proxy_socket '/run/a b'"
    )
    assert target_marker(ProxyTarget(network_id="cmt-n")) == "--network_id cmt-n"
    assert proxy_args(target, [], Path("/s"), debug=True)[-1] == "--debug"


def _pids_with(marker: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and marker in cmdline(int(p))]


async def _wait_listening(namespace: str) -> None:
    """Until the proxy answers at all (it sets its title before it listens)."""
    deadline = time.monotonic() + 20
    while (await curl(namespace, max_time=2))[0] == 0:
        assert time.monotonic() < deadline, "the proxy never listened"
        await asyncio.sleep(0.05)


@pytest.mark.root
@pytest.mark.parametrize("kind", ["network", "router"])
async def test_process_mode_proxy_is_titled_and_still_recognised(
    make_config: object, kind: str
) -> None:
    chain = await start_chain(make_config, ProxyMode.PROCESS)
    try:
        assert chain.manager is not None and chain.client is not None
        if kind == "network":
            uuid, _ = await chain.network()
        else:
            uuid = (await chain.client.create_router(f"cmt-{chain.tag}"))["id"]
        namespace = await chain.gateway_namespace(chain.name("d", 0))

        async def ensure(manager: MetadataProxyManager) -> None:
            if kind == "network":
                await manager.ensure(namespace, network_id=uuid, bind=(META_IP, 80))
            else:
                await manager.ensure(namespace, router_id=uuid, bind=(META_IP, 80))

        await ensure(chain.manager)
        pid = chain.manager.pids()[namespace]
        await _wait_listening(namespace)

        line = cmdline(pid)
        assert line.startswith("ns-metadata-proxy "), line
        assert f"--{kind}_id {uuid} " in line and "--bind 169.254.169.254:80" in line, line
        assert "cloudmeta.proxy" not in line and sys.executable not in line, line
        ps = await linux.run(["ps", "-o", "args=", "-p", str(pid)])
        assert ps.stdout.startswith(f"ns-metadata-proxy --{kind}_id {uuid} "), ps.stdout

        # The manager recognises the retitled child: ensure again is a no-op, and a manager
        # of a restarted agent adopts it through its pid file instead of starting another.
        await ensure(chain.manager)
        assert chain.manager.pids()[namespace] == pid
        restarted = MetadataProxyManager(chain.config, None)
        await ensure(restarted)
        assert restarted.pids()[namespace] == pid
        assert _pids_with(f"--{kind}_id {uuid} ") == [pid]
    finally:
        await chain.close()
    assert _pids_with(f"--{kind}_id {uuid} ") == []


@pytest.mark.root
async def test_a_pid_file_naming_another_process_of_the_network_is_not_adopted(
    make_config: object,
) -> None:
    """A recycled pid now running, say, the network's dnsmasq (whose command line carries the
    network id in its paths) is not taken for the proxy: the marker is ``--network_id <id>``."""
    chain = await start_chain(make_config, ProxyMode.PROCESS)
    impostor = None
    try:
        assert chain.manager is not None
        network_id, _ = await chain.network()
        namespace = await chain.gateway_namespace(chain.name("d", 0))
        title = f"dnsmasq --pid-file=/run/cmt/{network_id}/pid"
        impostor = await asyncio.create_subprocess_exec("bash", "-c", f'exec -a "{title}" sleep 60')
        deadline = time.monotonic() + 10
        while not cmdline(impostor.pid).startswith("dnsmasq"):
            assert time.monotonic() < deadline, "bash never exec'd"
            await asyncio.sleep(0.01)
        pid_file = chain.config.state_path / "external" / "pids" / "metadata-proxy"
        pid_file.mkdir(parents=True, exist_ok=True)
        (pid_file / f"{network_id}.pid").write_text(f"{impostor.pid}\n")

        await chain.manager.ensure(namespace, network_id=network_id, bind=(META_IP, 80))
        pid = chain.manager.pids()[namespace]
        assert pid != impostor.pid
        await _wait_listening(namespace)
        assert cmdline(pid).startswith(f"ns-metadata-proxy --network_id {network_id} ")
        assert impostor.returncode is None and linux.pid_alive(impostor.pid)  # left alone
    finally:
        await chain.close()
        if impostor is not None:
            with contextlib.suppress(ProcessLookupError):  # a buggy manager stopped it
                impostor.kill()
            await impostor.wait()
