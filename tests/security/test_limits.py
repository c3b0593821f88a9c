"""Limits seen from inside instances: Neutron's per-address rate limit (429 + Retry-After),
header and body sizes, and slowloris on one network against another network's latency."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import META_IP, Chain, curl, start_chain
from scene import Member, build_scene

from cloudmeta import linux
from cloudmeta.config import ProxyMode
from support.report import SOAK, record, scaled

pytestmark = [pytest.mark.root, pytest.mark.soak]

SUPPORT = Path(__file__).resolve().parents[1] / "support"


# A 5-requests-in-1-s burst window under a loose base window (50 in Neutron's 10 s), so that
# the scene's own readiness requests cannot use up the base window's budget.
_LIMITED = {
    "rate_limit_enabled": True,
    "base_query_rate_limit": 50,
    "burst_window_duration": 1,
    "burst_query_rate_limit": 5,
}


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    mode, limited = request.param
    rate: dict[str, object] = {"metadata_rate_limiting": _LIMITED} if limited is True else {}
    if isinstance(limited, dict):
        rate.update(limited)
    # Slowloris: no per-peer cap, so all the connections of one attacker are held (the worst
    # case: as many attackers on one network as it takes).
    rate.setdefault("metadata_proxy_max_connections_per_peer", 0)
    made = await start_chain(make_config, mode, **rate)
    try:
        yield made
    finally:
        await made.close()


async def _headers(namespace: str) -> tuple[int, str]:
    argv = ["curl", "-s", "-i", "-m", "5", f"http://{META_IP}/openstack/latest/meta_data.json"]
    out = (await linux.run(argv, namespace=namespace, check=False, timeout=10)).stdout
    status = int(out.split(" ", 2)[1]) if out.startswith("HTTP/") else 0
    return status, out


async def _burst(namespace: str, count: int) -> tuple[list[int], set[str]]:
    """Statuses of ``count`` back-to-back requests, and the Retry-After values seen."""
    url = f"http://{META_IP}/openstack/latest/meta_data.json"
    argv = ["curl", "-s", "-i", "-m", "10", *([url] * count)]
    out = (await linux.run(argv, namespace=namespace, check=False, timeout=15)).stdout
    # curl -i prints each response's head right after the previous body, which may not end
    # with a newline: find the status lines anywhere, not only at line starts.
    statuses = [int(code) for code in re.findall(r"HTTP/1\.[01] (\d{3}) ", out)]
    retry_after = set(re.findall(r"(?im)^retry-after:\s*(\S+)", out))
    return statuses, retry_after


@pytest.mark.parametrize("chain", [(m, True) for m in ProxyMode], indirect=True, ids=str)
async def test_rate_limit_and_sizes(chain: Chain) -> None:
    members = await build_scene(chain)
    noisy, quiet = members[0], members[1]
    # All 15 from one curl (one process, connections reused), so that a loaded machine's slow
    # process starts cannot spread them out long enough for the bucket to refill.
    statuses, retry_after = await _burst(noisy.instance.namespace, 15)
    # The other instance keeps its own budget.
    assert (await _headers(quiet.instance.namespace))[0] == 200
    record(
        "limit",
        f"{chain.config.metadata_proxy_mode}:rate-limit",
        tries=len(statuses),
        ok=statuses.count(200),
        throttled=statuses.count(429),
        retry_after=",".join(sorted(retry_after)),
    )
    assert len(statuses) == 15, statuses
    # The burst window's 5 (less the readiness check's request if it is still in the window;
    # haproxy's rate is an estimate: one more at most), then 429 for the rest.
    assert statuses[:3] == [200] * 3 and statuses.count(200) <= 6, statuses
    assert set(statuses) <= {200, 429}, statuses
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after)
    await asyncio.sleep(3.0)  # refill
    # A header block past the limits: refused (400/431), never 5xx, never a document.
    status, body = await curl(quiet.instance.namespace, headers={"X-Big": "a" * 20000})
    assert status in (400, 431), (status, body)
    many = {f"X-Cmt-{i}": "x" for i in range(200)}
    status, body = await curl(quiet.instance.namespace, headers=many)
    assert status in (400, 431), (status, body)
    # Password: 1020 bytes at most.
    status, _ = await curl(
        quiet.instance.namespace,
        "/openstack/latest/password",
        method="POST",
        headers={"Content-Type": "text/plain"},
        max_time=5,
    )
    record(
        "limit",
        f"{chain.config.metadata_proxy_mode}:sizes",
        password_post=status,
        headers_refused=1,
    )


@pytest.mark.parametrize(
    "chain",
    [(m, {"metadata_rate_limiting": {**_LIMITED, "ip_versions": [6]}}) for m in ProxyMode],
    indirect=True,
    ids=str,
)
async def test_rate_limit_spares_the_ip_versions_not_listed(chain: Chain) -> None:
    """``ip_versions = [6]``: an IPv4 caller is not limited, in every mode (haproxy's ACL)."""
    members = await build_scene(chain)
    statuses, _ = await _burst(members[0].instance.namespace, 15)
    assert statuses == [200] * 15, statuses


async def _p99(member: Member, seconds: float) -> float:
    argv = [
        sys.executable,
        str(SUPPORT / "loadloop.py"),
        META_IP,
        "/openstack/latest/meta_data.json",
        str(seconds),
        "0.005",
        "5",
    ]
    rows = json.loads(
        (await linux.run(argv, namespace=member.instance.namespace, timeout=seconds + 30)).stdout
    )
    latencies = sorted(r[3] for r in rows if r[1] == 200)
    assert latencies, rows[:5]
    return latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0]


# A head timeout past the attack, so every connection stays for the whole measurement (the
# worst case; with the default 10 s the gate starts cutting them with 408).
_HOLD_ALL = {"metadata_proxy_header_timeout": 120.0}


@pytest.mark.parametrize(
    "chain", [(ProxyMode.INLINE, _HOLD_ALL), (ProxyMode.HAPROXY, _HOLD_ALL)], indirect=True, ids=str
)
async def test_slowloris_on_one_network_spares_another(chain: Chain) -> None:
    members = await build_scene(chain)
    attacker, victim = members[0], members[2]  # network A vs network B
    connections = scaled(200, 1000)
    window = scaled(2, 5)  # seconds of the victim's request loop, before and during
    baseline = await _p99(victim, window)
    holder = asyncio.create_task(
        linux.run(
            [
                sys.executable,
                str(SUPPORT / "holder.py"),
                META_IP,
                str(connections),
                str(window + 4),
            ],
            namespace=attacker.instance.namespace,
            timeout=60 + window,
        )
    )
    await asyncio.sleep(2.0)
    loaded = await _p99(victim, window)
    held = (await holder).stdout.split()
    ratio = loaded / baseline
    mode = chain.config.metadata_proxy_mode
    record(
        "limit",
        f"{mode}:slowloris",
        connections=connections,
        held=held[-1],
        p99_before_ms=baseline * 1000,
        p99_during_ms=loaded * 1000,
        ratio=ratio,
    )
    assert int(held[-1]) >= connections * 0.9, held  # the attack really held its connections
    # Every run: the other network was served during the attack (_p99 saw 200s). The latency
    # ratio is the soak's (make test only reports it: a busy CI machine's p99 is noise): loose
    # in every mode, and inline mode to the 1.5x plus 5 ms of noise on a few-ms p99.
    if SOAK:
        assert loaded < max(10 * baseline, 0.5), (baseline, loaded)
        if mode == ProxyMode.INLINE:
            assert loaded <= 1.5 * baseline + 0.005, (baseline, loaded)


@pytest.mark.parametrize(
    "chain",
    [
        (
            ProxyMode.INLINE,
            {"metadata_proxy_max_connections": 40, "metadata_proxy_header_timeout": 3},
        )
    ],
    indirect=True,
    ids=str,
)
async def test_connection_cap_per_network(chain: Chain) -> None:
    """Network A's listener full: A's next caller gets 503 at once, network B is served; the
    held heads are cut by the head timeout (408) and A is served again."""
    members = await build_scene(chain)
    attacker, victim = members[0], members[2]
    assert chain.agent is not None
    budget = chain.agent.inline.budget_of(chain.name("da", 0))
    assert budget is not None
    holder = asyncio.create_task(
        linux.run(
            [sys.executable, str(SUPPORT / "holder.py"), META_IP, "100", "6"],
            namespace=attacker.instance.namespace,
            timeout=60,
        )
    )
    # Until the listener is full (the holder's heads are then cut 3 s after they opened).
    async with asyncio.timeout(15.0):  # a liveness bound, far above what it takes
        while budget.open < 40:  # noqa: ASYNC110 (the budget has no event to wait on)
            await asyncio.sleep(0.01)
    full, _ = await curl(attacker.instance.namespace, max_time=5)
    other, _ = await curl(victim.instance.namespace, max_time=5)
    held = (await holder).stdout.split()
    after, _ = await curl(attacker.instance.namespace, max_time=5)
    record(
        "limit",
        "inline:connection-cap",
        cap=40,
        tried=100,
        held_after_timeout=held[-1],
        refused=budget.refused,
        timed_out=budget.timed_out,
        attacker_status=full,
        other_network_status=other,
    )
    assert (full, other, after) == (503, 200, 200)
    assert budget.refused >= 60 and budget.timed_out >= 40 and int(held[-1]) == 0
