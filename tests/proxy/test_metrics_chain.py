"""Prometheus metrics through the real chain: one instance request is counted once at every
hop this process serves (proxy, agent, api), scraped from the admin API's ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from harness import META_IP, Chain, Instance, curl, start_chain, uuid_of

from cloudmeta.config import ProxyMode
from support.scrape import Samples, delta, scrape, total

pytestmark = pytest.mark.root

REQUESTS = "cloudmeta_metadata_requests_total"
COUNT = "cloudmeta_metadata_request_duration_seconds_count"
FAMILIES = {
    "cloudmeta_metadata_requests",
    "cloudmeta_metadata_request_duration_seconds",
    "cloudmeta_port_cache_lookups",
    "cloudmeta_port_cache_evictions",
    "cloudmeta_document_cache_lookups",
    "cloudmeta_document_cache_evictions",
    "cloudmeta_change_feed_revision",
    "cloudmeta_change_feed_apply_seconds",
    "cloudmeta_rate_limited_requests",
    "cloudmeta_process_starts",
    "cloudmeta_open_connections",
    "cloudmeta_refused_connections",
    "cloudmeta_head_timeouts",
    "cloudmeta_inventory_objects",
    "cloudmeta_inventory_revision",
}


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    made = await start_chain(make_config, request.param)
    try:
        yield made
    finally:
        await made.close()


async def _served(chain: Chain) -> tuple[Instance, str]:
    assert chain.manager is not None
    network_id, _ = await chain.network("192.0.2.0/24")
    dhcp_ns = await chain.gateway_namespace(chain.name("d", 0))
    instance = await chain.instance(0, network_id, "192.0.2.10", dhcp_ns, "192.0.2.2")
    await chain.manager.ensure(dhcp_ns, network_id=network_id, bind=(META_IP, 80))
    end = time.monotonic() + 10.0  # child proxies need a moment to listen
    while True:
        status, body = await curl(instance.namespace, max_time=2)
        if status == 200 or time.monotonic() > end:
            assert (status, uuid_of(body)) == (200, instance.server_id), body
            return instance, dhcp_ns
        await asyncio.sleep(0.1)


async def _metrics(chain: Chain) -> tuple[set[str], Samples]:
    return await scrape(chain.config.admin_url + "/metrics")


@pytest.mark.parametrize("chain", [ProxyMode.INLINE, ProxyMode.PROCESS], indirect=True, ids=str)
async def test_a_request_is_counted_at_every_hop(chain: Chain) -> None:
    mode = chain.config.metadata_proxy_mode.value
    instance, dhcp_ns = await _served(chain)
    families, before = await _metrics(chain)
    assert families >= FAMILIES, FAMILIES - families
    status, _ = await curl(instance.namespace)
    assert status == 200
    status, _ = await curl(instance.namespace, "/latest/meta-data/cmt-nothing-here")
    assert status == 404
    _, after = await _metrics(chain)
    # The process-mode proxy is its own process (not scraped): its requests show at the
    # agent hop with mode="process".
    hops = {"agent": mode, "api": ""} | ({"proxy": mode} if mode == "inline" else {})
    for hop, hop_mode in hops.items():
        ok = {"hop": hop, "mode": hop_mode, "status": "200", "kind": "openstack"}
        assert delta(after, before, REQUESTS, **ok) == 1, hop
        missing = {"hop": hop, "mode": hop_mode, "status": "404", "kind": "ec2"}
        assert delta(after, before, REQUESTS, **missing) == 1, hop
        assert delta(after, before, COUNT, hop=hop) == 2, hop
    if mode == "inline":
        # The namespace's listener: the curl's connection is closed by now.
        assert total(after, "cloudmeta_open_connections", listener=dhcp_ns) == 0
    else:
        assert delta(after, {}, "cloudmeta_process_starts_total", service="metadata-proxy") >= 1
    lookups = "cloudmeta_port_cache_lookups_total"
    assert delta(after, before, lookups, result="hit") == 2  # the port was looked up before
    assert total(after, "cloudmeta_inventory_objects", kind="server") == 1
    assert total(after, "cloudmeta_inventory_objects", kind="port") >= 1
    revision = total(after, "cloudmeta_inventory_revision")
    assert revision > 0
    # The agent's feed reaches the inventory's last revision (no write since).
    end = time.monotonic() + 10.0
    while total(after, "cloudmeta_change_feed_revision", consumer="port-cache") != revision:
        assert time.monotonic() < end, "the port cache's feed never reached the revision"
        await asyncio.sleep(0.05)
        _, after = await _metrics(chain)


async def test_rate_limited_requests_are_counted(make_config: object) -> None:
    chain = await start_chain(
        make_config, ProxyMode.INLINE, metadata_rate_limit=0.2, metadata_rate_burst=2
    )
    try:
        assert chain.manager is not None
        network_id, _ = await chain.network("192.0.2.0/24")
        dhcp_ns = await chain.gateway_namespace(chain.name("d", 0))
        instance = await chain.instance(0, network_id, "192.0.2.10", dhcp_ns, "192.0.2.2")
        await chain.manager.ensure(dhcp_ns, network_id=network_id, bind=(META_IP, 80))
        _, before = await _metrics(chain)
        statuses = [(await curl(instance.namespace))[0] for _ in range(6)]
        _, after = await _metrics(chain)
    finally:
        await chain.close()
    assert set(statuses) <= {200, 429} and 429 in statuses, statuses
    throttled = statuses.count(429)
    assert delta(after, before, "cloudmeta_rate_limited_requests_total") == throttled
    assert delta(after, before, REQUESTS, hop="agent", status="429") == throttled
    assert delta(after, before, REQUESTS, hop="proxy", status="429") == throttled
    assert delta(after, before, REQUESTS, hop="api") == 6 - throttled
