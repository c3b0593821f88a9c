"""Scenario ``chain-<mode>-aio``: wrk from inside a lab-style instance of ``cloudmeta
all-in-one``, for ``inline`` and ``haproxy`` one after the other in the same run.

This is the topology users run (the lab, the README's one-host way): API, metadata agent, DHCP
and L3 agents and the inline listeners in one process and loop, plus, by default
(``metadata_workers = auto``: one per core), worker processes serving the same inline listeners
(:mod:`cloudmeta.inline_workers`); the row ``chain-inline-aio-w1`` is the same with one process
(``metadata_workers = 1``), measured in the same run. Each mode gets its
own all-in-one (child process, ``CLOUDMETA_*`` variables, SQLite in its state dir), one
network with isolated metadata, one server, and an instance namespace plugged on the DHCP
agent's bridge (in the bench's own bridge namespace, as the lab's fabric) that takes its lease
with the safe ``dhclient`` (option 121 brings the 169.254.169.254 route). Then wrk runs inside
that namespace against ``meta_data.json``, as cloud-init would reach it.

With ``--profile`` a further wrk run of the same length is recorded by ``py-spy`` (the
all-in-one and its worker processes) into ``<out>/chain-<mode>-aio.svg``; the measured run is
never the profiled one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ADMIN_TOKEN,
    META_IP,
    META_PATH,
    BenchError,
    Row,
    Settings,
    cpu_seconds,
    free_port,
    need_tools,
    process_tree,
    pss_bytes,
    wrk,
    wrk_row,
)
from bench.services import Service, wait_http
from bench.services import settings as base_settings

# (mode, metadata_workers: the processes serving the inline listeners): the default first
# (auto: one per core here), then one process; haproxy mode has no inline listeners.
RUNS: tuple[tuple[str, int | str], ...] = (("inline", "auto"), ("inline", 1), ("haproxy", "auto"))
CIDR = "198.51.100.0/24"


async def run(bench: Settings, tmp: Path) -> list[Row]:
    need_tools("wrk", "haproxy", "dhclient", "dnsmasq")
    rows: list[Row] = []
    for mode, inline_workers in RUNS:
        name = f"{mode}-w{inline_workers}" if inline_workers != "auto" else mode
        rows.append(await _one(bench, tmp / name, mode, inline_workers))
    return rows


def aio_options(
    state: Path, mode: str, prefix: str, workers: int | str, inline_workers: int | str = 1
) -> dict[str, Any]:
    """An all-in-one on free loopback ports, its agents' names under ``prefix``; ``workers``
    is ``[api] metadata_workers``, ``inline_workers`` the top-level ``metadata_workers``."""
    admin_port, metadata_port = free_port(), free_port()
    return base_settings(
        state,
        admin={"listen": "127.0.0.1", "port": admin_port},
        api={
            "metadata_listen": "127.0.0.1",
            "metadata_listen_port": metadata_port,
            "metadata_workers": workers,
        },
        admin_url=f"http://127.0.0.1:{admin_port}",
        nova_metadata_port=metadata_port,
        namespace_prefix=prefix,
        device_prefix="cmt-",
        bridge_namespace=f"{prefix}fabric",
        enable_isolated_metadata=True,
        metadata_proxy_mode=mode,
        metadata_workers=inline_workers,
        check_child_processes_interval=1.0,
    )


async def _one(bench: Settings, state: Path, mode: str, inline_workers: int | str) -> Row:
    from cloudmeta import linux
    from cloudmeta.adminclient import AdminClient

    tag = secrets.token_hex(3)
    prefix = f"cmt-bench-{tag}-"
    options = aio_options(state, mode, prefix, bench.aio_workers, inline_workers)
    aio = Service("all-in-one", options, state / "all-in-one.log").start()
    client: Any = None
    instance = f"{prefix}i0"
    try:
        admin_url = f"http://127.0.0.1:{options['admin']['port']}"
        await wait_http(f"{admin_url}/v1/projects", aio, timeout=60)
        client = AdminClient(url=admin_url, token=ADMIN_TOKEN)
        project = await client.create_project(f"cmt-bench-{tag}")
        net = await client.create_network(f"{prefix}net", project_id=project["id"])
        await client.create_subnet(net["id"], CIDR, project_id=project["id"])
        server = await client.create_server(
            f"{prefix}vm0",
            [{"network_id": net["id"]}],
            project_id=project["id"],
            user_data="I2Nsb3VkLWNvbmZpZwo=",
            metadata={"role": "bench"},
        )
        port = await client.get_port(server["ports"][0])
        await served(aio, state, prefix, net["id"], [port["mac_address"]])
        linux.create_namespace(instance)
        await linux.plug_veth(
            instance,
            "eth0",
            mac=port["mac_address"],
            host_ifname=f"cmt-{tag}i0",
            bridge=linux.bridge_name("cmt-", net["id"]),
            bridge_namespace=f"{prefix}fabric",
        )
        await linux.run_dhclient(instance, "eth0", state_dir=state / "dhclient", timeout=30)
        await _ready(instance)
        url = f"http://{META_IP}{META_PATH}"
        await wrk(url, 1, namespace=instance)
        assert aio.proc is not None
        pids = process_tree(aio.proc.pid)
        before = cpu_seconds(pids)
        figures = await wrk(url, bench.duration, namespace=instance)
        spent = cpu_seconds(pids) - before
        suffix = f"-w{inline_workers}" if mode == "inline" and inline_workers != "auto" else ""
        row = wrk_row(f"chain-{mode}-aio{suffix}", figures, bench.duration, networks=1, instances=1)
        row.pss_bytes = pss_bytes(pids)
        # CPU per request of the serving processes: what load on the machine moves least.
        requests = max(1.0, figures["rps"] * round(bench.duration))
        per_request = spent * 1e6 / requests
        by_wrk = figures["client_cpu_s"] * 1e6 / requests
        row.note = (
            f"cpu_us/request={per_request:.1f}; client_cpu_us/request={by_wrk:.1f} (wrk); "
            f"metadata_workers={inline_workers} ({len(pids)} processes); "
            f"[api] metadata_workers={bench.aio_workers} (the all-in-one tree, haproxy included)"
        )
        if bench.profile is not None:
            await _profiled(bench, url, instance, pids[0], bench.profile / f"{row.name}.svg")
        return row
    finally:
        if client is not None:
            await client.close()
        await aio.stop()
        await linux.cleanup(
            namespaces=linux.list_namespaces(prefix),
            pid_dir=state / "dhclient",
        )
        await linux.cleanup(pid_dir=state / "external" / "pids")


async def served(
    service: Service,
    state: Path,
    prefix: str,
    network_id: str,
    macs: list[str],
    timeout: float = 60,  # noqa: ASYNC109
) -> None:
    """Until dnsmasq's host file knows every MAC and the DHCP namespace exists."""
    from cloudmeta import linux

    hosts = state / "dhcp" / network_id / "host"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check()
        known = hosts.read_text().lower() if hosts.exists() else ""
        if all(mac.lower() in known for mac in macs) and linux.namespace_exists(
            f"{prefix}qdhcp-{network_id}"
        ):
            await asyncio.sleep(1.0)  # dnsmasq re-reads the file on the agent's SIGHUP
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"the DHCP agent did not serve network {network_id} within {timeout} s")


async def _ready(namespace: str) -> None:
    from cloudmeta import linux

    argv = ["curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}"]
    for _ in range(100):
        result = await linux.run(
            [*argv, f"http://{META_IP}{META_PATH}"], namespace=namespace, check=False
        )
        if result.stdout.strip() == "200":
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"no 200 from the metadata service seen from {namespace}")


async def _profiled(bench: Settings, url: str, namespace: str, pid: int, out: Path) -> None:
    """A flame graph of the all-in-one (and its workers) under one more wrk run (``.txt``:
    py-spy's collapsed stacks, for reading)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds = max(1, round(bench.duration))
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses",
        "--rate", "200", "--duration", str(seconds + 1),
        "--pid", str(pid), "--output", str(out),
        "--format", "raw" if out.suffix == ".txt" else "flamegraph",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # attached before the load starts
        await wrk(url, bench.duration, namespace=namespace)
        async with asyncio.timeout(seconds + 30):
            await spy.wait()
    finally:
        if spy.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                spy.kill()
            await spy.wait()
