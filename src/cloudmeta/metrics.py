"""Prometheus metrics of every cloudmeta service: the definitions, the hop recorders, the scrape.

Every metric is defined here, once, on prometheus_client's default registry (metrics are
per process by nature); the services import what they count. The hot path (one metadata
request per hop) costs two clock reads, one memoised path classification, one dict lookup of a
plain counter and one bucket of plain integers (a collector turns them into families at
scrape time); nothing is built per request. The other counters (cache hits) are pre-bound
prometheus_client children.

Metadata API workers (``[api] metadata_workers``) are other processes: they run with
``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multiprocess mode, mmap-backed values) and
the parent's scrape merges their files into its own families (:func:`render`): counters and
histograms add up, gauges take the minimum (the most lagging worker's revision).

This module is core: it imports no service (agent, api, proxy, dhcp, l3).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from cloudmeta.documents.paths import path_tokens

__all__ = [
    "CONTENT_TYPE",
    "DOCUMENT_CACHE_EVICTIONS",
    "DOCUMENT_CACHE_HIT",
    "DOCUMENT_CACHE_MISS",
    "FEED_APPLY",
    "FEED_REVISION",
    "KINDS",
    "PORT_CACHE_EVICTIONS",
    "PORT_CACHE_HIT",
    "PORT_CACHE_MISS",
    "PROCESS_RESPAWNS",
    "PROCESS_RESTARTS",
    "PROCESS_STARTS",
    "RATE_LIMITED",
    "REQUESTS",
    "REQUEST_DURATION",
    "HopRecorder",
    "Tally",
    "instrument",
    "metrics_handler",
    "path_kind",
    "recorder",
    "render",
    "watch_listener",
    "watch_worker_files",
    "worker_environment",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # A metadata worker: exec'd, never forked, so its pid is read once here rather than by
    # prometheus_client's fork check on every increment (a getpid() syscall each: a quarter
    # of the metrics' cost in a worker, py-spy).
    _PID = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: _PID)  # type: ignore[no-untyped-call]
# `_created` series double every counter's output and nothing here graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds; metadata answers are sub-millisecond when cached, the agent's timeout is 10 s.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
KINDS = ("openstack", "ec2", "root", "token", "password", "other")

_REQUESTS_HELP = (
    "Metadata requests answered, by hop (proxy, agent, api), path kind, HTTP status and proxy "
    "mode (inline, process, haproxy; empty at the API)."
)
_DURATION_HELP = (
    "Seconds from a request's head to its answer, per hop (proxy and agent include the hops "
    "behind them)."
)
# The two request families. In a metadata worker they are prometheus_client objects
# (multiprocess values, which the parent's scrape reads); everywhere else the hop recorders
# count in plain integers and a collector builds the families at scrape time: a locked
# increment per series costs a request more than everything else the metrics do.
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# A worker's counts reach its multiprocess files at most this long after the request.
FLUSH_INTERVAL = 1.0


def _flush_later(flush: Callable[[], None]) -> None:
    """Run ``flush`` ``FLUSH_INTERVAL`` from now on the running loop (now, without one)."""
    try:
        asyncio.get_running_loop().call_later(FLUSH_INTERVAL, flush)
    except RuntimeError:  # no loop (a test's direct call): write now
        flush()


class Tally:
    """A counter series bumped on every request (a cache hit): in a worker, counted in a plain
    integer and added to its multiprocess value within ``FLUSH_INTERVAL`` (and at exit), as
    the hop recorders do; in the parent, incremented at once (a plain locked add)."""

    __slots__ = ("_child", "_count", "_due", "_flushed")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._count = 0
        self._flushed = 0
        self._due = False
        _TALLIES.append(self)

    def inc(self) -> None:
        if not _MULTIPROCESS:
            self._child.inc()
            return
        self._count += 1
        if not self._due:
            self._due = True
            _flush_later(self.flush)

    def flush(self) -> None:
        self._due = False
        if self._count > self._flushed:
            self._child.inc(self._count - self._flushed)
            self._flushed = self._count


_TALLIES: list[Tally] = []
REQUESTS = Counter(
    "cloudmeta_metadata_requests",
    _REQUESTS_HELP,
    ["hop", "kind", "status", "mode"],
    registry=REGISTRY if _MULTIPROCESS else None,
)
REQUEST_DURATION = Histogram(
    "cloudmeta_metadata_request_duration_seconds",
    _DURATION_HELP,
    ["hop"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY if _MULTIPROCESS else None,
)
_PORT_CACHE = Counter(
    "cloudmeta_port_cache_lookups",
    "Metadata agent port/router lookups by result: hit (answered from the cache) or miss "
    "(asked the admin API).",
    ["result"],
)
PORT_CACHE_HIT = Tally(_PORT_CACHE.labels("hit"))
PORT_CACHE_MISS = Tally(_PORT_CACHE.labels("miss"))
PORT_CACHE_EVICTIONS = Counter(
    "cloudmeta_port_cache_evictions",
    "Port-cache entries dropped: by a change that touched them, or all at once by a resync "
    "or a lost feed.",
    ["reason"],
)
_DOCUMENT_CACHE = Counter(
    "cloudmeta_document_cache_lookups",
    "Metadata API instance-document cache lookups by result (hit, miss: loaded from the "
    "inventory).",
    ["result"],
)
DOCUMENT_CACHE_HIT = Tally(_DOCUMENT_CACHE.labels("hit"))
DOCUMENT_CACHE_MISS = Tally(_DOCUMENT_CACHE.labels("miss"))
DOCUMENT_CACHE_EVICTIONS = Counter(
    "cloudmeta_document_cache_evictions",
    "Instance entries dropped from the metadata API's cache: change, expired, or clear "
    "(history lost, feed failed).",
    ["reason"],
)
FEED_REVISION = Gauge(
    "cloudmeta_change_feed_revision",
    "The inventory revision a change-feed consumer has applied; its lag in revisions is "
    "cloudmeta_inventory_revision minus this.",
    ["consumer"],
    multiprocess_mode="livemin",
)
FEED_APPLY = Histogram(
    "cloudmeta_change_feed_apply_seconds",
    "Seconds from a change batch's arrival (the feed's long poll returns on commit) to its "
    "application by the consumer.",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "cloudmeta_rate_limited_requests",
    "Metadata requests the agent refused with 429 ([metadata_rate_limiting]: a source "
    "address over its base or burst window; haproxy mode's own 429s are not counted).",
)
PROCESS_STARTS = Counter(
    "cloudmeta_process_starts",
    "Child processes started (dnsmasq, metadata-proxy, ...), respawns and restarts included.",
    ["service"],
)
PROCESS_RESPAWNS = Counter(
    "cloudmeta_process_respawns",
    "Dead child processes the process monitor started again.",
    ["service"],
)
PROCESS_RESTARTS = Counter(
    "cloudmeta_process_restarts",
    "Live child processes stopped and started again for a new command line (dnsmasq).",
    ["service"],
)


# -- the hop recorders ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def path_kind(path: str) -> str:
    """The ``kind`` label of a request path (memoised: a hot path is one dict lookup)."""
    tokens = path_tokens(path)
    if tokens == ["ec2"]:
        return "root"
    if tokens[-1] == "token" and tokens[-3:] == ["latest", "api", "token"]:
        return "token"
    if tokens[0] == "openstack":
        return "password" if len(tokens) == 3 and tokens[2] == "password" else "openstack"
    second = tokens[1] if len(tokens) > 1 else ""
    if second == "latest" or second[:1].isdigit():
        return "ec2"
    return "other"


class HopRecorder:
    """One hop's (and mode's) requests: counts by kind and status, latency buckets and sum,
    as plain numbers (one event loop thread; read by :class:`_HopCollector` at scrape)."""

    __slots__ = ("buckets", "by_kind", "hop", "mode", "seconds")

    def __init__(self, hop: str, mode: str = "") -> None:
        self.hop = hop
        self.mode = mode
        self.by_kind: dict[str, dict[int, int]] = {kind: {} for kind in KINDS}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # not cumulative; the last is +Inf
        self.seconds = 0.0

    def record(self, path: str, status: int, seconds: float) -> None:
        by_status = self.by_kind[path_kind(path)]
        by_status[status] = by_status.get(status, 0) + 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds


class _WorkerRecorder(HopRecorder):
    """A worker's hop (metadata API or inline worker): counted in plain numbers as in the
    parent, and the deltas written to the multiprocess values at most ``FLUSH_INTERVAL``
    after the first unflushed request (and at exit). A locked mmap write per series per
    request cost a worker 8.6 us of a ~60 us request (timeit), 10x the parent's counting."""

    __slots__ = ("_due", "_duration", "_flushed_buckets", "_flushed_kind", "_flushed_seconds")

    def __init__(self, hop: str, mode: str = "") -> None:
        super().__init__(hop, mode)
        self._duration = REQUEST_DURATION.labels(hop)
        self._flushed_kind: dict[tuple[str, int], int] = {}
        self._flushed_buckets = [0] * len(self.buckets)
        self._flushed_seconds = 0.0
        self._due = False

    def record(self, path: str, status: int, seconds: float) -> None:
        super().record(path, status, seconds)
        if not self._due:
            self._due = True
            _flush_later(self.flush)

    def flush(self) -> None:
        """Add what was counted since the last flush to the multiprocess values."""
        self._due = False
        for kind, by_status in self.by_kind.items():
            for status, count in list(by_status.items()):
                done = self._flushed_kind.get((kind, status), 0)
                if count > done:
                    REQUESTS.labels(self.hop, kind, str(status), self.mode).inc(count - done)
                    self._flushed_kind[(kind, status)] = count
        # prometheus_client's Histogram keeps per-bucket (non-cumulative) values and a sum in
        # multiprocess mode; observe() is one bucket inc and a sum inc, done here in bulk.
        child = self._duration
        for index, count in enumerate(self.buckets):
            done = self._flushed_buckets[index]
            if count > done:
                child._buckets[index].inc(count - done)
                self._flushed_buckets[index] = count
        if self.seconds != self._flushed_seconds:
            child._sum.inc(self.seconds - self._flushed_seconds)
            self._flushed_seconds = self.seconds


def _flush_workers() -> None:
    for one in list(_RECORDERS.values()):
        if isinstance(one, _WorkerRecorder):
            one.flush()
    for tally in _TALLIES:
        tally.flush()


_BOUNDS = [floatToGoString(b) for b in LATENCY_BUCKETS]  # type: ignore[no-untyped-call]
_RECORDERS: dict[tuple[str, str], HopRecorder] = {}


def recorder(hop: str, mode: str = "") -> HopRecorder:
    """The process's one recorder of ``(hop, mode)`` (a restarted agent keeps counting)."""
    found = _RECORDERS.get((hop, mode))
    if found is None:
        found = _RECORDERS[(hop, mode)] = (_WorkerRecorder if _MULTIPROCESS else HopRecorder)(
            hop, mode
        )
    return found


class _HopCollector:
    """The request families from every :class:`HopRecorder` of this process."""

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "cloudmeta_metadata_requests", _REQUESTS_HELP, labels=["hop", "kind", "status", "mode"]
        )
        duration = HistogramMetricFamily(
            "cloudmeta_metadata_request_duration_seconds", _DURATION_HELP, labels=["hop"]
        )
        per_hop: dict[str, tuple[list[int], float]] = {}
        for one in list(_RECORDERS.values()):
            if isinstance(one, _WorkerRecorder):  # in multiprocess values instead
                continue
            for kind, by_status in one.by_kind.items():
                for status, count in list(by_status.items()):
                    requests.add_metric([one.hop, kind, str(status), one.mode], count)
            buckets, total = per_hop.get(one.hop, ([0] * len(one.buckets), 0.0))
            per_hop[one.hop] = ([a + b for a, b in zip(buckets, one.buckets, strict=True)],
                                total + one.seconds)  # fmt: skip
        for hop, (buckets, total) in sorted(per_hop.items()):
            cumulative = list(accumulate(buckets))
            bounds = [*_BOUNDS, "+Inf"]
            duration.add_metric([hop], list(zip(bounds, cumulative, strict=True)), total)
        yield requests
        yield duration


if not _MULTIPROCESS:
    REGISTRY.register(_HopCollector())
else:
    atexit.register(_flush_workers)  # a worker stopping (EOF, SIGTERM) keeps its last second


P = ParamSpec("P")
Handler = Callable[Concatenate[web.BaseRequest, P], Awaitable[web.StreamResponse]]


def instrument(handler: Handler[P], hop: str, mode: str = "", enabled: bool = True) -> Handler[P]:
    """``handler`` counted and timed as ``hop`` (itself when ``enabled`` is false: the
    bench's baseline). A handler that raises is counted as the 500 aiohttp answers."""
    if not enabled:
        return handler
    record = recorder(hop, mode).record
    clock = time.perf_counter

    async def counted(
        request: web.BaseRequest, /, *args: P.args, **kwargs: P.kwargs
    ) -> web.StreamResponse:
        start = clock()
        try:
            response = await handler(request, *args, **kwargs)
        except Exception:
            record(request.path, 500, clock() - start)
            raise
        record(request.path, response.status, clock() - start)
        return response

    return counted


# -- listeners (the connection gate) ----------------------------------------------------------


class _Budget(Protocol):
    """What :class:`cloudmeta.http.gate.Budget` counts (read at scrape time)."""

    open: int
    refused: int
    refused_per_peer: int
    timed_out: int


_LISTENERS: dict[int, tuple[str, _Budget]] = {}


def watch_listener(name: str, budget: _Budget) -> Callable[[], None]:
    """Export ``budget``'s counts under ``listener=name`` until the returned callable runs."""
    key = id(budget)
    _LISTENERS[key] = (name, budget)

    def unwatch() -> None:
        _LISTENERS.pop(key, None)

    return unwatch


class _ListenerCollector:
    """Open connections, refused connections and head timeouts of every watched listener."""

    def collect(self) -> Iterator[Metric]:
        opened = GaugeMetricFamily(
            "cloudmeta_open_connections",
            "Open connections per listener (a namespace's inline listener, or admin, "
            "metadata, agent-socket, metrics).",
            labels=["listener"],
        )
        refused = CounterMetricFamily(
            "cloudmeta_refused_connections",
            "Connections answered 503 and closed by the gate: the listener's cap or the "
            "per-peer cap.",
            labels=["listener", "reason"],
        )
        timeouts = CounterMetricFamily(
            "cloudmeta_head_timeouts",
            "Connections closed with 408: a request head not complete within "
            "metadata_proxy_header_timeout.",
            labels=["listener"],
        )
        totals: dict[str, list[int]] = {}
        for name, budget in list(_LISTENERS.values()):
            acc = totals.setdefault(name, [0, 0, 0, 0])
            acc[0] += budget.open
            acc[1] += budget.refused - budget.refused_per_peer
            acc[2] += budget.refused_per_peer
            acc[3] += budget.timed_out
        for name, (open_, cap, per_peer, timed_out) in sorted(totals.items()):
            opened.add_metric([name], open_)
            refused.add_metric([name, "cap"], cap)
            refused.add_metric([name, "per_peer"], per_peer)
            timeouts.add_metric([name], timed_out)
        yield opened
        yield refused
        yield timeouts


REGISTRY.register(_ListenerCollector())


# -- the scrape -------------------------------------------------------------------------------

_WORKER_DIRS: list[Path] = []


def watch_worker_files(path: Path) -> Callable[[], None]:
    """Merge the multiprocess files in ``path`` (the metadata workers') into every scrape of
    this process until the returned callable runs."""
    _WORKER_DIRS.append(path)

    def unwatch() -> None:
        if path in _WORKER_DIRS:
            _WORKER_DIRS.remove(path)

    return unwatch


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """Families of the same name as one: counters and histograms add up, gauges take the
    minimum (a revision: the most lagging process)."""
    out: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for family in families:
        first = out.setdefault(family.name, family)
        samples = values.setdefault(family.name, {})
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            seen = samples.get(key)
            if seen is None:
                samples[key] = sample
            elif first.type == "gauge":
                samples[key] = seen._replace(value=min(seen.value, sample.value))
            else:
                samples[key] = seen._replace(value=seen.value + sample.value)
    for name, family in out.items():
        merged = Metric(family.name, family.documentation, family.type, family.unit)
        merged.samples = list(values[name].values())
        out[name] = merged
    return list(out.values())


class _Snapshot:
    """What one scrape renders: this process's registry, the workers' files, ``extra``."""

    def __init__(self, extra: Iterable[Metric]) -> None:
        self._extra = extra

    def collect(self) -> Iterable[Metric]:
        families = list(REGISTRY.collect())
        dirs = [d for d in _WORKER_DIRS if d.is_dir()]
        if not dirs:
            return [*families, *self._extra]
        for directory in dirs:
            collector = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
            families += collector.collect()  # type: ignore[no-untyped-call]
        return [*_merged(families), *self._extra]


def render(extra: Iterable[Metric] = ()) -> bytes:
    """The text exposition of this process's metrics (and its workers'), plus ``extra``
    families computed by the caller at scrape time (the inventory's size)."""
    return generate_latest(_Snapshot(extra))


async def metrics_handler(request: web.BaseRequest) -> web.Response:
    """``GET /metrics`` for a process without other state to add (the agents' listener)."""
    if request.path != "/metrics":
        return web.Response(status=404, text="Only /metrics is served here.\n")
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, text="Use GET.\n", headers={"Allow": "GET, HEAD"})
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})


def worker_environment(directory: Path) -> dict[str, str]:
    """The environment of a metadata worker that writes its metrics to ``directory``."""
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
