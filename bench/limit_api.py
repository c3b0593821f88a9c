"""Scenarios ``limit`` (nginx serving the same bytes: the machine's ceiling), ``api`` (the
metadata API alone, signed headers, hot cache, 64 connections) and ``api-floor`` (the same
request answered with the same bytes by cloudmeta's serving stack and no work of the API's:
the bound of the Python stack, ``bench/stack_floor.py``), all on loopback."""

from __future__ import annotations

import asyncio
import contextlib
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
    median_row,
    need_tools,
    process_tree,
    wrk,
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
    rows = {
        name: median_row(name, figures, seconds, spent=spent[name], client=True, listed="rps")
        for name, figures in rounds.items()
    }
    rows["limit"].note = f"{len(body)} bytes, nginx workers: one per core; " + rows["limit"].note
    rows["api-floor"].note += f"; the serving stack alone, {API_WORKERS} processes"
    rows["api"].instances = 1
    return list(rows.values())


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
