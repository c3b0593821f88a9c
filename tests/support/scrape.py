"""Scraping a service's ``/metrics`` the way Prometheus reads it (prometheus_client's parser)."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample, keyed by (sample name, labels)."""
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


async def scrape(url: str) -> tuple[set[str], Samples]:
    """GET ``url`` (a ``/metrics``) and parse it; the content type must be Prometheus' text."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain", resp.content_type
        return parse(await resp.text())


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def delta(
    after: Samples,
    before: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    return total(after, name, **labels) - total(dict(before), name, **labels)


async def settled(url: str, name: str, deadline: float = 20.0) -> tuple[set[str], Samples]:
    """A scrape once ``name``'s total holds still across a worker's flush interval: worker
    processes write their request counts at most ``FLUSH_INTERVAL`` after a request
    (:mod:`cloudmeta.metrics`), so a scrape right after one may not have them yet."""
    import asyncio
    import time

    from cloudmeta.metrics import FLUSH_INTERVAL

    give_up = time.monotonic() + deadline
    families, samples = await scrape(url)
    while True:
        await asyncio.sleep(FLUSH_INTERVAL + 0.25)
        families, later = await scrape(url)
        if total(later, name) == total(samples, name):
            return families, later
        assert time.monotonic() < give_up, f"{name} kept changing for {deadline} s"
        samples = later
