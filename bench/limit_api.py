"""Scenarios ``limit`` (nginx serving the same bytes: the machine's ceiling) and ``api`` (the
metadata API alone, signed headers, hot cache, 64 connections), both on loopback."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from bench.common import META_PATH, Row, Settings, lua_headers, need_tools, wrk, wrk_row
from bench.services import get, signed_headers, small_inventory, start_api, wait_http

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


async def run(settings: Settings, tmp: Path) -> list[Row]:
    from bench.common import free_port

    need_tools("wrk", "nginx")
    api = await start_api(tmp / "state")
    try:
        server, project_id, _net, ip = await small_inventory(api, 10)
        headers = signed_headers(server["id"], project_id, ip)
        api_url = f"{api.metadata_url}{META_PATH}"
        status, body = await asyncio.to_thread(get, api_url, headers)
        if status != 200:
            raise RuntimeError(f"metadata API answered {status}: {body[:200]!r}")
        script = lua_headers(tmp / "signed.lua", headers)
        await wrk(api_url, 1, script=script)  # hot cache, warm workers
        api_figures = await wrk(api_url, settings.duration, script=script)
        api_row = wrk_row("api", api_figures, settings.duration, instances=1)
    finally:
        await api.close()
    limit_row = await _nginx(settings, tmp, body, free_port())
    limit_row.note = f"{len(body)} bytes, nginx workers: one per core"
    return [limit_row, api_row]


def _nginx_files(tmp: Path, body: bytes, port: int) -> Path:
    """nginx's tree under ``tmp``; returns its nginx.conf."""
    tmp.chmod(0o755)  # nginx's worker drops root and must reach www/
    www = tmp / "www" / Path(META_PATH).parent.relative_to("/")
    www.mkdir(parents=True)
    (www / "meta_data.json").write_bytes(body)
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    return tmp / "nginx.conf"


async def _nginx(settings: Settings, tmp: Path, body: bytes, port: int) -> Row:
    conf = _nginx_files(tmp, body, port)
    nginx = await asyncio.create_subprocess_exec(
        "nginx", "-c", str(conf), "-g", "daemon off;",
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}{META_PATH}"
        await wait_http(url)
        figures = await wrk(url, settings.duration)
    finally:
        nginx.terminate()
        try:
            await asyncio.wait_for(nginx.wait(), 5)
        except TimeoutError:
            nginx.kill()
            await nginx.wait()
    return wrk_row("limit", figures, settings.duration)
