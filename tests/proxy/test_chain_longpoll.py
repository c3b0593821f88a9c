"""GCE-style change long-poll through the whole chain (instance -> proxy -> agent -> API) in
every proxy mode: ETag and If-None-Match, a poll woken by an admin's metadata write, the
timeout answer, the per-instance cap, and a wait longer than the agent's forward timeout and
the keep-alive and head timeouts (none of them cuts a request in progress); parked polls count
against the inline listener's connection cap per peer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from harness import META_IP, Chain, Instance, start_chain

from cloudmeta import linux
from cloudmeta.api.metadata.app import MAX_WAITS_PER_INSTANCE
from cloudmeta.config import ProxyMode
from support.report import SOAK, record
from support.scrape import delta, scrape, total

pytestmark = pytest.mark.root

DOC = "/openstack/latest/meta_data.json"
# The chain's agent gives the API 3 s (harness); idle and head timeouts here are 1 s.
FORWARD_TIMEOUT = 3.0
# Issue 17: a parked poll answers within 200 ms of the admin write's acknowledgement.
WAKE_BOUND = 0.2


async def fetch(
    ns: str, path: str, headers: dict[str, str] | None = None, max_time: float = 15.0
) -> tuple[int, str, str]:
    """curl inside the instance: (status, ETag header, body)."""
    argv = ["curl", "-s", "-m", f"{max_time:g}", "-o", "-"]
    argv += ["-w", "\n%header{etag}\n%{http_code}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://{META_IP}{path}")
    result = await linux.run(argv, namespace=ns, check=False, timeout=max_time + 5)
    rest, _, code = result.stdout.rpartition("\n")
    body, _, etag = rest.rpartition("\n")
    return int(code or 0), etag, body


def _unseeded(body: str) -> dict[str, object]:
    data = json.loads(body)
    data.pop("random_seed")
    return dict(data)


async def _parked(instance: Instance) -> None:
    """Until every wait slot of the instance is taken: a zero-second probe answers 429 then."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        status, _, _ = await fetch(instance.namespace, f"{DOC}?wait_for_change=true&timeout_sec=0")
        if status == 429:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the long-polls never all waited")


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    made = await start_chain(
        make_config,
        request.param,
        metadata_proxy_keepalive_timeout=1.0,
        metadata_proxy_header_timeout=1.0,
    )
    try:
        yield made
    finally:
        await made.close()


async def _one_instance(chain: Chain) -> Instance:
    assert chain.manager is not None
    network_id, _ = await chain.network("192.0.2.0/24")
    dhcp_ns = await chain.gateway_namespace(chain.name("d", 0))
    instance = await chain.instance(0, network_id, "192.0.2.10", dhcp_ns, "192.0.2.2")
    await chain.manager.ensure(dhcp_ns, network_id=network_id, bind=(META_IP, 80))
    end = time.monotonic() + 10
    while (await fetch(instance.namespace, DOC, max_time=2))[0] in (0, 503):
        assert time.monotonic() < end, "the proxy never answered"
        await asyncio.sleep(0.1)
    return instance


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_long_poll_through_the_chain(chain: Chain) -> None:
    assert chain.client is not None
    instance = await _one_instance(chain)
    ns = instance.namespace
    status, etag, body = await fetch(ns, DOC)
    assert status == 200 and etag.startswith('W/"'), etag  # weak: the seed differs per answer
    first = _unseeded(body)
    assert (await fetch(ns, DOC))[1] == etag  # the same document, the same ETag
    assert (await fetch(ns, DOC, {"If-None-Match": etag}))[:2] == (304, etag)
    assert (await fetch(ns, DOC, {"If-None-Match": '"other", ' + etag}))[0] == 304
    assert (await fetch(ns, DOC, {"If-None-Match": '"other"'}))[0] == 200
    # The EC2 tree has strong ETags (its bytes are the same every time).
    status, ec2_etag, _ = await fetch(ns, "/latest/meta-data/hostname")
    assert status == 200 and ec2_etag.startswith('"')
    assert (await fetch(ns, "/latest/meta-data/hostname", {"If-None-Match": ec2_etag}))[0] == 304

    # Timeout: the unchanged document and the same ETag, after a wait longer than the agent's
    # forward timeout and the keep-alive and head timeouts.
    started = time.monotonic()
    status, same, body = await fetch(
        ns, f"{DOC}?wait_for_change=true&last_etag={etag}&timeout_sec={FORWARD_TIMEOUT + 1:g}"
    )
    waited = time.monotonic() - started
    assert status == 200 and same == etag and _unseeded(body) == first
    assert FORWARD_TIMEOUT + 1 <= waited < FORWARD_TIMEOUT + 4, waited

    # A stale last_etag answers at once; a malformed timeout_sec is a 400.
    status, _, _ = await fetch(ns, f'{DOC}?wait_for_change=true&last_etag="stale"', max_time=5)
    assert status == 200
    assert (await fetch(ns, f"{DOC}?wait_for_change=true&timeout_sec=soon"))[0] == 400

    # Park every wait slot of the instance, then change its metadata as an admin.
    polls = [
        asyncio.create_task(
            fetch(ns, f"{DOC}?wait_for_change=true&last_etag={etag}&timeout_sec=30", max_time=40)
        )
        for _ in range(MAX_WAITS_PER_INSTANCE)
    ]
    await _parked(instance)
    await chain.client.update_server(instance.server_id, metadata={"cmt-role": "db"})
    acked = time.monotonic()
    latencies = []
    for poll in asyncio.as_completed(polls):
        status, new_etag, body = await poll
        latencies.append(time.monotonic() - acked)
        assert status == 200 and new_etag != etag
        assert json.loads(body)["meta"] == {"cmt-role": "db"}
    record(
        "long-poll",
        f"wake after an admin write, {chain.config.metadata_proxy_mode}",
        polls=len(latencies),
        min_s=min(latencies),
        max_s=max(latencies),
    )
    # Issue 17's bound on the first answer (a wake by the feed's 0.5 s poll instead would miss
    # it 3 times in 5); on every parked poll under soak, and 10 s (not the 30 s timeout) always.
    assert min(latencies) < WAKE_BOUND, latencies
    assert max(latencies) < (WAKE_BOUND if SOAK else 10), latencies
    assert (await fetch(ns, DOC, {"If-None-Match": new_etag}))[0] == 304


async def test_parked_polls_count_against_the_per_peer_cap(make_config: object) -> None:
    """A parked long-poll holds its connection: with a cap of 2 per peer, an instance with two
    polls parked is refused a third connection by the gate (503, counted), and served again
    once the polls have answered."""
    chain = await start_chain(
        make_config, ProxyMode.INLINE, metadata_proxy_max_connections_per_peer=2
    )
    try:
        assert chain.client is not None
        instance = await _one_instance(chain)
        ns = instance.namespace
        _, etag, _ = await fetch(ns, DOC)
        polls = [
            asyncio.create_task(
                fetch(
                    ns, f"{DOC}?wait_for_change=true&last_etag={etag}&timeout_sec=30", max_time=40
                )
            )
            for _ in range(2)
        ]
        dhcp_ns = chain.name("d", 0)  # the inline listener's namespace: its metrics label
        metrics = chain.config.admin_url + "/metrics"
        end = time.monotonic() + 10
        while total((await scrape(metrics))[1], "cloudmeta_open_connections", listener=dhcp_ns) < 2:
            assert time.monotonic() < end, "the polls never both waited"
            await asyncio.sleep(0.05)
        _, before = await scrape(metrics)
        status, _, _ = await fetch(ns, DOC, max_time=5)
        _, after = await scrape(metrics)
        assert status == 503
        refused = "cloudmeta_refused_connections_total"
        assert delta(after, before, refused, listener=dhcp_ns, reason="per_peer") == 1
        assert not any(poll.done() for poll in polls)
        await chain.client.update_server(instance.server_id, metadata={"cmt-role": "db"})
        for status, new_etag, _ in await asyncio.gather(*polls):
            assert status == 200 and new_etag != etag
        assert (await fetch(ns, DOC))[0] == 200
    finally:
        await chain.close()
