"""cloudmeta.metrics without services: path kinds, the hop recorder, the gate's counts and the
merge of metadata workers' multiprocess files into the parent's scrape."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cloudmeta import metrics
from cloudmeta.http import Budget, Limits
from support.scrape import delta, parse, total

REQUESTS = "cloudmeta_metadata_requests_total"
COUNT = "cloudmeta_metadata_request_duration_seconds_count"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "root"),
        ("/ec2", "root"),
        ("/openstack", "openstack"),
        ("/openstack/latest/meta_data.json", "openstack"),
        ("/openstack/2013-04-04/password", "password"),
        ("/openstack/latest/password/", "password"),
        ("/latest/api/token", "token"),
        ("/ec2/latest/api/token", "token"),
        ("/latest/./api/token", "token"),
        ("/latest/meta-data/instance-id", "ec2"),
        ("/2009-04-04/meta-data/", "ec2"),
        ("/ec2/latest/user-data", "ec2"),
        ("/favicon.ico", "other"),
        ("/../../etc/passwd", "other"),
    ],
)
def test_path_kind(path: str, kind: str) -> None:
    assert metrics.path_kind(path) == kind


async def test_instrument_counts_each_answer_by_kind_and_status_and_a_raise_as_500() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/boom":
            raise RuntimeError("boom")
        return web.Response(status=404 if request.path == "/nope" else 200)

    counted = metrics.instrument(handler, "cmt-hop", "cmt-mode")
    _, before = parse(metrics.render().decode())
    await counted(make_mocked_request("GET", "/openstack/latest/meta_data.json"))
    await counted(make_mocked_request("GET", "/openstack/latest/meta_data.json"))
    await counted(make_mocked_request("GET", "/nope"))
    with pytest.raises(RuntimeError):
        await counted(make_mocked_request("GET", "/boom"))
    _, after = parse(metrics.render().decode())
    hop = {"hop": "cmt-hop", "mode": "cmt-mode"}
    assert delta(after, before, REQUESTS, kind="openstack", status="200", **hop) == 2
    assert delta(after, before, REQUESTS, kind="other", status="404", **hop) == 1
    assert delta(after, before, REQUESTS, kind="other", status="500", **hop) == 1
    assert delta(after, before, COUNT, hop="cmt-hop") == 4
    # Off (the bench's baseline): the handler itself, nothing counted.
    assert metrics.instrument(handler, "cmt-hop", enabled=False) is handler


def test_gate_counts_per_listener_until_unwatched() -> None:
    budget = Budget(Limits(max_connections=2, max_per_peer=1))
    unwatch = metrics.watch_listener("cmt-ns", budget)
    try:
        assert budget.take("192.0.2.10")
        assert not budget.take("192.0.2.10")  # per peer
        assert budget.take("192.0.2.11")
        assert not budget.take("192.0.2.12")  # the listener's cap
        budget.timed_out += 1
        _, samples = parse(metrics.render().decode())
        assert total(samples, "cloudmeta_open_connections", listener="cmt-ns") == 2
        refused = "cloudmeta_refused_connections_total"
        assert total(samples, refused, listener="cmt-ns", reason="per_peer") == 1
        assert total(samples, refused, listener="cmt-ns", reason="cap") == 1
        assert total(samples, "cloudmeta_head_timeouts_total", listener="cmt-ns") == 1
    finally:
        unwatch()
    families, samples = parse(metrics.render().decode())
    assert "cloudmeta_open_connections" in families
    assert not [key for key in samples if ("listener", "cmt-ns") in key[1]]


_WORKER = """
import asyncio
from cloudmeta import metrics
recorder = metrics.recorder("api")

async def serve():
    # As in a worker's loop: counted in plain numbers, written a flush interval later.
    for _ in range({n}):
        recorder.record("/openstack/latest/meta_data.json", 200, 0.002)
        metrics.DOCUMENT_CACHE_HIT.inc()  # a Tally: the same deferred writing
    # Nothing written yet (the flush is due in FLUSH_INTERVAL).
    written = metrics.REQUESTS.labels("api", "openstack", "200", "")._value.get()
    assert written == 0, written
    hits = metrics._DOCUMENT_CACHE.labels("hit")._value.get()
    assert hits == 0, hits
    if {wait}:
        await asyncio.sleep(metrics.FLUSH_INTERVAL + 0.5)  # the loop's own flush
        recorder.flush()  # nothing more to add: no double count
        metrics.DOCUMENT_CACHE_HIT.flush()
        hits = metrics._DOCUMENT_CACHE.labels("hit")._value.get()
        assert hits == {n}, hits

asyncio.run(serve())
metrics.FEED_REVISION.labels("document-cache").set({revision})
# Without the wait, the worker exits with its counts unflushed: atexit writes them.
"""


def _worker(directory: Path, n: int, revision: int, *, wait: bool) -> int:
    env = metrics.worker_environment(directory)
    script = _WORKER.format(n=n, revision=revision, wait=wait)
    proc = subprocess.run([sys.executable, "-c", script], env=env, check=True)
    assert proc.returncode == 0
    return n


def test_workers_files_are_merged_into_the_parents_families(tmp_path: Path) -> None:
    directory = tmp_path / "cmt-metrics"
    directory.mkdir()
    labels = {"hop": "api", "kind": "openstack", "status": "200", "mode": ""}
    _, before = parse(metrics.render().decode())
    ours = metrics.recorder("api")
    ours.record("/openstack/latest/meta_data.json", 200, 0.002)
    metrics.DOCUMENT_CACHE_HIT.inc()  # the parent's: at once
    metrics.FEED_REVISION.labels("document-cache").set(7)
    unwatch = metrics.watch_worker_files(directory)
    try:
        _worker(directory, 3, 5, wait=True)
        _worker(directory, 2, 9, wait=False)
        text = metrics.render().decode()
    finally:
        unwatch()
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None  # only the workers' variable
    families, after = parse(text)  # one family per name: the parser refuses duplicates
    assert {"cloudmeta_metadata_requests", "cloudmeta_change_feed_revision"} <= families
    assert delta(after, before, REQUESTS, **labels) == 1 + 3 + 2
    assert delta(after, before, COUNT, hop="api") == 6
    hits = "cloudmeta_document_cache_lookups_total"
    assert delta(after, before, hits, result="hit") == 1 + 3 + 2
    bucket = "cloudmeta_metadata_request_duration_seconds_bucket"
    assert delta(after, before, bucket, hop="api", le="0.0025") == 6
    assert delta(after, before, bucket, hop="api", le="0.001") == 0
    # Gauges take the minimum: the most lagging process's revision.
    assert total(after, "cloudmeta_change_feed_revision", consumer="document-cache") == 5
    # Unwatched: this process's own figures only.
    _, alone = parse(metrics.render().decode())
    assert delta(alone, before, REQUESTS, **labels) == 1


async def test_child_starts_and_respawns_are_counted(tmp_path: Path) -> None:
    from cloudmeta.linux.process import ProcessManager, ProcessMonitor

    marker = f"cmt-metrics-{os.getpid()}"
    manager = ProcessManager(
        marker, ["sh", "-c", "sleep 600", marker], pid_dir=tmp_path, service="cmt-child"
    )
    monitor = ProcessMonitor(interval=60)
    monitor.register(manager)
    _, before = parse(metrics.render().decode())
    try:
        pid = manager.enable()
        os.kill(pid, 9)
        for _ in range(500):  # until the kernel has it dead (a zombie until reaped)
            if not manager.is_active():
                break
            await asyncio.sleep(0.01)
        assert monitor.check_once() == [manager]
    finally:
        await manager.stop(timeout=1)
    _, after = parse(metrics.render().decode())
    starts = "cloudmeta_process_starts_total"
    assert delta(after, before, starts, service="cmt-child") == 2
    assert delta(after, before, "cloudmeta_process_respawns_total", service="cmt-child") == 1
