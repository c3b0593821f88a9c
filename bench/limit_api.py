"""Scenarios ``limit`` (nginx serving the same bytes: the machine's ceiling), ``api`` (the
metadata API alone, signed headers, hot cache, 64 connections) and ``api-floor`` (the same
request answered with the same bytes by cloudmeta's serving stack and no work of the API's:
the bound of the Python stack, ``bench/stack_floor.py``), all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import (
    META_PATH,
    Row,
    Settings,
    cpu_seconds,
    free_port,
    lua_headers,
    need_tools,
    process_tree,
    wrk,
    wrk_row,
)
from bench.services import (
    API_WORKERS,
    get,
    signed_headers,
    small_inventory,
    start_api,
    wait_http,
)

REPO = Path(__file__).resolve().parent.parent  # where ``-m bench.stack_floor`` is found
NGINX_CONF = """
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {tmp}/www; default_type application/json; }}
    }}
}}
"""


ROUNDS = 4  # alternating rounds of duration / 2 per server; each row is their median


async def run(settings: Settings, tmp: Path) -> list[Row]:
    """nginx, the API and the stack's floor up side by side, measured in alternating rounds
    with the same request (the agent's signed headers): on a shared machine one run each
    moves the ratio by more than the code does (0.36-0.48 in three runs of one build)."""
    need_tools("wrk", "nginx")
    async with contextlib.AsyncExitStack() as stack:
        api = await start_api(tmp / "state")
        stack.push_async_callback(api.close)
        server, project_id, _net, ip = await small_inventory(api, 10)
        headers = signed_headers(server["id"], project_id, ip)
        api_url = f"{api.metadata_url}{META_PATH}"
        status, body = await asyncio.to_thread(get, api_url, headers)
        if status != 200:
            raise RuntimeError(f"metadata API answered {status}: {body[:200]!r}")
        script = lua_headers(tmp / "signed.lua", headers)
        api_pids = process_tree(api.service.proc.pid) if api.service.proc else []
        floor_url, floor_pids = await stack.enter_async_context(_floor(tmp, body))
        nginx_url = await stack.enter_async_context(_nginx(tmp, body, free_port()))
        servers = {"limit": (nginx_url, []), "api": (api_url, api_pids),
                   "api-floor": (floor_url, floor_pids)}  # fmt: skip
        for url, _pids in servers.values():
            await wrk(url, 1, script=script)  # hot cache, warm workers
        seconds = settings.duration if settings.quick else settings.duration / 2
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        spent = dict.fromkeys(servers, 0.0)
        for _ in range(1 if settings.quick else ROUNDS):
            for name, (url, pids) in servers.items():
                before = cpu_seconds(pids)
                rounds[name].append(await wrk(url, seconds, script=script))
                spent[name] += cpu_seconds(pids) - before
    rows = [_median_row(name, figures, seconds, spent[name]) for name, figures in rounds.items()]
    rows[0].note = f"{len(body)} bytes, nginx workers: one per core; " + rows[0].note
    rows[2].note += f"; the serving stack alone, {API_WORKERS} processes"
    rows[1].instances = 1
    return rows


def _median_row(name: str, figures: list[dict[str, float]], seconds: float, spent: float) -> Row:
    """The median round's figures; the servers' CPU (not nginx's: 0) and wrk's per request."""
    med = {k: statistics.median(f[k] for f in figures) for k in ("rps", "p50_ms", "p99_ms")}
    med["failures"] = sum(f["failures"] for f in figures)
    row = wrk_row(name, med, seconds * len(figures))
    served = max(1.0, sum(f["rps"] for f in figures) * round(seconds))
    client = sum(f.get("client_cpu_s", 0.0) for f in figures)
    notes = [f"cpu_us/request={spent * 1e6 / served:.1f}"] if spent else []
    notes.append(f"client_cpu_us/request={client * 1e6 / served:.1f} (wrk)")
    if len(figures) > 1:
        notes.append("median of rounds; rounds req/s: " +
                     " ".join(f"{f['rps']:.0f}" for f in figures))  # fmt: skip
    row.note = "; ".join(notes)
    return row


@contextlib.asynccontextmanager
async def _floor(tmp: Path, body: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """``api-floor``: :mod:`bench.stack_floor` in as many processes as the API has,
    answering the API's bytes; yields its URL and pids."""
    port = free_port()
    (tmp / "floor-body").write_bytes(body)
    argv = [sys.executable, "-m", "bench.stack_floor", str(port), str(tmp / "floor-body")]
    procs = []
    try:
        for _ in range(API_WORKERS):
            procs.append(
                await asyncio.create_subprocess_exec(*argv, cwd=REPO, start_new_session=True)
            )
        url = f"http://127.0.0.1:{port}{META_PATH}"
        await wait_http(url)
        yield url, [proc.pid for proc in procs]
    finally:
        for proc in procs:  # all told first: an interrupted wait leaves none running
            if proc.returncode is None:
                proc.terminate()
        await asyncio.gather(*(_stop(proc) for proc in procs))


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _nginx_files(tmp: Path, body: bytes, port: int) -> Path:
    """nginx's tree under ``tmp``; returns its nginx.conf."""
    tmp.chmod(0o755)  # nginx's worker drops root and must reach www/
    www = tmp / "www" / Path(META_PATH).parent.relative_to("/")
    www.mkdir(parents=True)
    (www / "meta_data.json").write_bytes(body)
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    return tmp / "nginx.conf"


@contextlib.asynccontextmanager
async def _nginx(tmp: Path, body: bytes, port: int) -> AsyncIterator[str]:
    """nginx (one worker per core) serving ``body`` as the same path; yields its URL."""
    conf = _nginx_files(tmp, body, port)
    nginx = await asyncio.create_subprocess_exec(
        "nginx", "-c", str(conf), "-g", "daemon off;",
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}{META_PATH}"
        await wait_http(url)
        yield url
    finally:
        await _stop(nginx)
