"""Requests/s and p99 per hop from two scrapes of ``GET /metrics`` (pure: text in, numbers out).

Prometheus' own arithmetic, done here because the lab has no Prometheus server: a counter's
rate is its increase over the interval (a decrease means the process restarted: the new value
is the increase), a quantile is ``histogram_quantile`` over the buckets' increases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["DURATION", "REQUESTS", "HopRate", "Scrape", "parse", "quantile", "rates"]

REQUESTS = "cloudmeta_metadata_requests"  # the counter's family name (samples end in _total)
DURATION = "cloudmeta_metadata_request_duration_seconds"
QUANTILE = 0.99


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape says per hop: requests so far, and cumulative bucket counts by ``le``."""

    at: float
    requests: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HopRate:
    hop: str
    rps: float
    p99_seconds: float | None  # None: no request in the interval


def parse(text: str, at: float) -> Scrape:
    """The two families of the metadata path from Prometheus text (other metrics ignored)."""
    requests: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for sample in family.samples:
                if sample.name == f"{REQUESTS}_total":
                    hop = sample.labels.get("hop", "")
                    requests[hop] = requests.get(hop, 0.0) + sample.value
        elif family.name == DURATION:
            for sample in family.samples:
                if sample.name == f"{DURATION}_bucket":
                    hop = sample.labels.get("hop", "")
                    le = float(sample.labels["le"])
                    by_le = buckets.setdefault(hop, {})
                    by_le[le] = by_le.get(le, 0.0) + sample.value
    return Scrape(at, requests, buckets)


def _increase(now: float, before: float | None) -> float:
    if before is None or now < before:  # new series, or the process restarted
        return now
    return now - before


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile(q, ...)`` over cumulative counts by upper bound (``+Inf`` included)."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound, as Prometheus says
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def rates(before: Scrape, now: Scrape) -> list[HopRate]:
    """Per hop, requests/s and p99 over the interval between two scrapes."""
    span = now.at - before.at
    if span <= 0:
        return []
    found = []
    for hop in sorted(set(now.requests) | set(now.buckets)):
        done = _increase(now.requests.get(hop, 0.0), before.requests.get(hop))
        old = before.buckets.get(hop, {})
        new = now.buckets.get(hop, {})
        restarted = any(new.get(le, 0.0) < count for le, count in old.items())
        delta = {le: _increase(c, None if restarted else old.get(le)) for le, c in new.items()}
        found.append(HopRate(hop, done / span, quantile(QUANTILE, delta)))
    return found
