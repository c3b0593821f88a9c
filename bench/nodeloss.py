"""Scenarios ``node-loss`` and ``dhcp-path-node-loss``: metadata while network nodes die
(issue 14, item 4).

A multi-node lab (the lab's own machinery: PostgreSQL, two API hosts, network and compute
nodes over VXLAN) with one namespace instance per compute node, one on each network; then, one
round at a time, a network node is killed (``kill -9`` of its processes, its namespaces
deleted) while both instances read ``meta_data.json`` every 0.1 s. ``node-loss`` is
cloudmeta's way (localports on the compute nodes): the figure is the median over 5 rounds (1
with ``--quick``) of the time from the loss to the last failed request (0 when none failed);
failures are wrong documents plus requests failing more than 5 s after a loss. There are
rounds + 1 network nodes, so one always survives. ``dhcp-path-node-loss`` (not with
``--quick``) is the same loss with metadata served Neutron's way (each DHCP agent's route via
its own port, routed networks through the router on network-1), one round, for comparison:
its failures are the requests that failed after the loss.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import Row, Settings, free_port, need_tools

if TYPE_CHECKING:
    from cloudmeta.lab.nodes.failover import FailoverResult

_WINDOW, _KILL_AFTER = 8.0, 2.0


async def run(settings: Settings, tmp: Path) -> list[Row]:
    need_tools("dnsmasq", "dhclient", "cloud-init", "ebtables-nft-restore")
    rounds = 1 if settings.quick else 5
    results = await _losses(tmp / "localport", rounds, distributed=True)
    times = [r.failover_seconds for r in results]
    rows = [
        Row(
            "node-loss",
            failures=sum(r.wrong + len(r.late) for r in results),
            seconds=statistics.median(times),
            instances=2,
            note=f"{rounds} network nodes lost one by one; failover per loss "
            + ", ".join(f"{t:.2f}" for t in times)
            + f" s; {_requests(results)} requests after the losses, "
            + f"{sum(r.failures for r in results)} failed"
            + _why(results),
        )
    ]
    if not settings.quick:
        (neutron,) = await _losses(tmp / "dhcp", 1, distributed=False)
        recovered = neutron.failover_seconds < _WINDOW - _KILL_AFTER - 1.5
        rows.append(
            Row(
                "dhcp-path-node-loss",
                failures=neutron.failures,
                seconds=neutron.failover_seconds,
                instances=2,
                note=f"Neutron's path: {neutron.failures} of {_requests([neutron])} requests "
                f"after the loss failed; {'recovered' if recovered else 'not recovered'} "
                f"within the {_WINDOW - _KILL_AFTER:.0f} s watched" + _why([neutron]),
            )
        )
    return rows


def _why(results: list[FailoverResult]) -> str:
    reasons: dict[str, int] = {}
    for result in results:
        for why, count in result.reasons.items():
            reasons[why] = reasons.get(why, 0) + count
    return f" ({', '.join(f'{w} x{n}' for w, n in sorted(reasons.items()))})" if reasons else ""


def _requests(results: list[FailoverResult]) -> int:
    return sum(sum(r.requests.values()) for r in results)


async def _losses(tmp: Path, rounds: int, *, distributed: bool) -> list[FailoverResult]:
    from cloudmeta.adminclient import AdminClient
    from cloudmeta.config import Config
    from cloudmeta.lab import cloud
    from cloudmeta.lab.nodes import start_nodes
    from cloudmeta.lab.nodes.failover import node_loss
    from cloudmeta.lab.state import LabState, load_state, save_state

    admin, metadata = free_port(), free_port()
    config = Config(
        state_path=tmp / "state",
        namespace_prefix=f"cmt-nl{secrets.token_hex(2)}-",
        device_prefix=f"cmt-{secrets.randbelow(90) + 10}",
        metadata_proxy_shared_secret="cmt-bench",
        admin={"listen": "127.0.0.1", "port": admin},
        admin_url=f"http://127.0.0.1:{admin}",
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        nova_metadata_port=metadata,
        log_format="json",
    )
    state = LabState()
    save_state(config, state)
    client = AdminClient(config)
    watches: list[asyncio.Task[None]] = []
    try:
        watches = await start_nodes(
            config, state, rounds + 1, 2, lambda _: None, distributed=distributed
        )
        await cloud.build_cloud(config, client, state, lambda _: None)
        by_name = {n.name: n.id for n in state.networks.values()}
        placed = (("cmt-nl-1", "isolated", "compute-1"), ("cmt-nl-2", "routed", "compute-2"))
        for name, network, host in placed:
            await cloud.boot_instance(config, client, state, name, by_name[network], host=host)
        booted = await asyncio.gather(
            *(cloud.wait_booted(config, state.instances[n]) for n, _, _ in placed)
        )
        if booted != ["ok"] * len(placed):
            raise RuntimeError(f"instances did not boot: {booted}")
        return [
            await node_loss(
                config, state, f"network-{i + 1}", seconds=_WINDOW, kill_after=_KILL_AFTER
            )
            for i in range(rounds)
        ]
    finally:
        for watch in watches:
            watch.cancel()
        await cloud.down(config, load_state(config) or state, client)
        await client.close()
