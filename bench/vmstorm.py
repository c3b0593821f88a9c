"""Scenarios ``vm-boot-1`` and ``vm-storm-<N>``: real QEMU guests of the lab booting at once.

One guest alone, then 4 at once (not with ``--quick``: minutes under TCG), on the lab's two
networks, through the lab's own machinery (``cloudmeta all-in-one``, the demo cloud,
``lab boot --vm``): time from
QEMU's start until every guest's cloud-init ``final`` is done (the guests' boot reports on their
serial consoles), failures (a guest not ``ok``), and memory per guest (PSS of its QEMU, sampled
when the guests are done). The image is the machine-wide cached one (built first if missing;
that build is not timed). Metadata request latency is not measured here: see ``boot-storm``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from bench.common import Row, Settings, free_port, need_tools, pss_bytes


async def run(settings: Settings, tmp: Path) -> list[Row]:
    from cloudmeta.adminclient import AdminClient
    from cloudmeta.config import Config
    from cloudmeta.lab import cloud
    from cloudmeta.lab.state import LabState, load_state, save_state
    from cloudmeta.lab.vm import driver
    from cloudmeta.lab.vm.runtime import prepare
    from cloudmeta.linux import qemu

    if settings.quick:  # real guests take minutes under TCG: not part of the quick run
        print("   vm-storm: skipped with --quick", flush=True)
        return []
    need_tools("qemu-system-x86_64", "qemu-img", "mmdebstrap", "dnsmasq")
    admin, metadata = free_port(), free_port()
    config = Config(
        state_path=tmp / "state",
        namespace_prefix=f"cmt-vb{secrets.token_hex(2)}-",
        device_prefix=f"cmt-{secrets.randbelow(90) + 10}",  # "cmt-NN" + "qr-" + 6 id chars
        metadata_proxy_shared_secret="cmt-bench",
        admin={"listen": "127.0.0.1", "port": admin},
        admin_url=f"http://127.0.0.1:{admin}",
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        nova_metadata_port=metadata,
        enable_isolated_metadata=True,
        log_format="json",
    )
    config = config.model_copy(update={"bridge_namespace": cloud.bridge_namespace(config)})
    options = await prepare(config.image_cache_path)
    accel = "kvm" if options.accel.kvm else "tcg"
    state = LabState()
    save_state(config, state)
    client = AdminClient(config)
    rows: list[Row] = []
    try:
        await cloud.ensure_all_in_one(config, client, state, lambda _: None)
        await cloud.build_cloud(config, client, state, lambda _: None)
        by_name = {n.name: n.id for n in state.networks.values()}
        order = sorted(by_name)
        storm = 4
        for label, count in (("vm-boot-1", 1), (f"vm-storm-{storm}", storm)):
            names = [f"cmt-{label}-{i}" for i in range(count)]
            started = time.monotonic()
            for i, name in enumerate(names):
                network = by_name[order[i % len(order)]]
                await cloud.boot_instance(config, client, state, name, network, vm=options)
            results = await asyncio.gather(
                *(cloud.wait_booted(config, state.instances[n], 600) for n in names)
            )
            seconds = time.monotonic() - started
            dirs = [cloud.instance_paths(config, n).dir for n in names]
            pids = [p for p in (qemu.qemu_pid(d) for d in dirs) if p is not None]
            boots = [driver.facts(d, "cmt-hello").boot_seconds for d in dirs]
            own = [b for b in boots if b is not None]
            rows.append(
                Row(
                    label,
                    failures=sum(r != "ok" for r in results),
                    seconds=seconds,
                    pss_bytes=pss_bytes(pids) // max(len(pids), 1),
                    instances=count,
                    note=f"{accel}; per guest QEMU start to final: "
                    + ", ".join(f"{b:.0f}" for b in own)
                    + " s",
                )
            )
            for name in names:
                await cloud.kill_instance(config, client, state, name)
    finally:
        await cloud.down(config, load_state(config) or state, client)
        await client.close()
    return rows
