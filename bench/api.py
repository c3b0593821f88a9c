"""Benchmark: the metadata API (hot cache, signed headers) next to nginx serving the same bytes.

    .venv/bin/python bench/api.py [--duration 10] [--workers 1] [--servers 50]

Builds an inventory in a temporary SQLite store, starts the API on a free loopback port (uvloop;
``--workers`` processes share the port with SO_REUSEPORT), starts nginx (foreground child, its
own tiny nginx.conf) serving the same ``meta_data.json`` bytes, drives both with ``wrk`` at 64
connections, and prints req/s, p50, p99 and RSS. Nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TARGET_PATH = "/openstack/latest/meta_data.json"
SECRET = "cmt-bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(state: Path, port: int, workers: int) -> Any:
    from cloudmeta.config import Config

    return Config(
        state_path=state,
        metadata_proxy_shared_secret=SECRET,
        log_format="json",
        api={
            "metadata_listen": "127.0.0.1",
            "metadata_listen_port": port,
            "metadata_workers": workers,
        },
    )


async def _populate(state: Path, servers: int) -> tuple[str, str]:
    """A network and ``servers`` instances; returns (instance id, project id) of the first."""
    from cloudmeta.inventory import Store, compute_ops, network_ops
    from cloudmeta.inventory.specs import (
        KeypairCreate,
        NetworkCreate,
        NetworkRequest,
        ServerCreate,
        SubnetCreate,
    )

    store = await Store.open(_config(state, 1, 1))
    ids: list[tuple[str, str]] = []

    async def work(tx: Any) -> None:
        project = await compute_ops.create_project(tx, "cmt-bench")
        await compute_ops.create_keypair(
            tx, KeypairCreate(name="cmt-key", project_id=project.id, public_key=None)
        )
        net = await network_ops.create_network(tx, NetworkCreate(project_id=project.id))
        await network_ops.create_subnet(
            tx, SubnetCreate(network_id=net.id, cidr="198.51.100.0/24", project_id=project.id)
        )
        for i in range(servers):
            server = await compute_ops.create_server(
                tx,
                ServerCreate(
                    name=f"cmt-bench-{i}",
                    project_id=project.id,
                    key_name="cmt-key",
                    metadata={"role": "bench", "index": str(i)},
                    networks=[NetworkRequest(network_id=net.id)],
                ),
            )
            ids.append((server.id, project.id))

    try:
        await store.transact(work)
    finally:
        await store.close()
    return ids[0]


def serve(state: Path, port: int, workers: int) -> None:
    """Child mode: one API worker process on ``port`` (SO_REUSEPORT)."""
    import uvloop
    from aiohttp import web

    from cloudmeta.api.metadata import make_metadata_app
    from cloudmeta.inventory import Store
    from cloudmeta.logs import setup_logging

    setup_logging(False, "json")

    async def main() -> None:
        config = _config(state, port, workers)
        store = await Store.open(config, migrate=False)
        runner = web.AppRunner(make_metadata_app(config, store), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=4096).start()
        print("READY", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def wait_http(url: str, headers: dict[str, str], timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from exc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+)", text)
        total += int(match.group(1)) if match else 0
    return total


def children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in out.split()]


def run_wrk(url: str, duration: int, script: Path | None) -> dict[str, float]:
    cmd = ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers)
        return
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is not installed (make install)")
    from cloudmeta.api.metadata.identity import sign_instance_id

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="cmt-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx's workers drop root and must reach www/
        try:
            state = tmp / "state"
            state.mkdir()
            instance_id, project_id = asyncio.run(_populate(state, args.servers))
            port = free_port()
            for _ in range(args.workers):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--serve", str(state), "--port", str(port),
                         "--workers", str(args.workers)],
                        stdout=subprocess.PIPE,
                    )
                )  # fmt: skip
            for proc in procs:
                assert proc.stdout is not None
                proc.stdout.readline()
            headers = {
                "X-Instance-ID": instance_id,
                "X-Tenant-ID": project_id,
                "X-Instance-ID-Signature": sign_instance_id(SECRET.encode(), instance_id),
                "X-Forwarded-For": "198.51.100.10",
            }
            api_url = f"http://127.0.0.1:{port}{TARGET_PATH}"
            body = wait_http(api_url, headers)
            lua = tmp / "signed.lua"
            lua.write_text("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
            www = tmp / "www" / "openstack" / "latest"
            www.mkdir(parents=True)
            (www / "meta_data.json").write_bytes(body)
            nginx_port = free_port()
            (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
            nginx = subprocess.Popen(
                ["nginx", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"],
                stderr=subprocess.DEVNULL,
            )
            procs.append(nginx)
            nginx_url = f"http://127.0.0.1:{nginx_port}{TARGET_PATH}"
            wait_http(nginx_url, {})
            run_wrk(api_url, 1, lua)  # warm up
            api = run_wrk(api_url, args.duration, lua)
            api_rss = rss_kib([p.pid for p in procs[:-1]])
            ngx = run_wrk(nginx_url, args.duration, None)
            ngx_rss = rss_kib([nginx.pid, *children(nginx.pid)])
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result = {
        "document_bytes": len(body),
        "workers": args.workers,
        "api": {**api, "rss_kib": api_rss},
        "nginx": {**ngx, "rss_kib": ngx_rss},
        "ratio": round(api["rps"] / ngx["rps"], 3),
    }
    print(f"{'':8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'RSS MiB':>9}")
    for name in ("api", "nginx"):
        r = result[name]
        print(f"{name:8}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['rss_kib'] / 1024:>9.1f}")  # fmt: skip
    print(f"API/nginx = {result['ratio']} (target >= 0.25; p99 target < 10 ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
