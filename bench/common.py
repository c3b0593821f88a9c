"""Shared pieces of the scenarios: run settings, result rows, wrk runs, Lua scripts, PSS.

Kept free of cloudmeta imports so the report and the quick test can use it without a cloud.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

META_IP = "169.254.169.254"
META_PATH = "/openstack/latest/meta_data.json"
SECRET = "cmt-bench-secret"
ADMIN_TOKEN = "cmt-bench-admin-token"
CONNECTIONS = 64
# What the names a scenario makes (namespaces, its state directory) start with; a session
# sharing the machine sets its own (``CMT_BENCH_PREFIX=cmt-<tag>-``) so its names are told apart.
NAME_PREFIX = os.environ.get("CMT_BENCH_PREFIX", "cmt-bench-")


class BenchError(Exception):
    """A scenario could not run (a tool missing, a service that did not start)."""


@dataclass(frozen=True)
class Settings:
    """How long and how big: the full run (<= 10 min) or ``--quick`` (a few seconds each)."""

    quick: bool
    duration: float  # seconds of wrk per throughput figure
    chain_sizes: tuple[int, ...]  # networks served, for the memory scenario
    process_max: int  # process mode costs ~45 MiB per network: cap it
    storm_sizes: tuple[int, ...]
    crawl_instances: int  # instances running the real cloud-init crawl
    scale_sizes: tuple[int, ...]
    scale_duration: float
    storm_large_sizes: tuple[int, ...] = (250, 500, 1000)  # bootstorm-large: growth to 1 000
    storm_per_network: int = 200  # instances per network (a /24: 253 hosts)
    memory_sizes: tuple[int, ...] = (1, 50, 100, 200, 250)  # marginal PSS at 1, 50, 200
    memory_worker_sizes: tuple[int, ...] = (1, 50, 100)  # the same with metadata_workers = 2
    aio_workers: int | str = 1  # the all-in-one's [api] metadata_workers
    # ``--raise-host-limits``: a storm raises the host-wide limits it meets (gc_thresh2/3,
    # netdev_max_backlog) for its duration (restored after), as a network node's operator
    # does; off, such a storm reports the limits and its lost offers and frames instead.
    raise_host_limits: bool = False
    profile: Path | None = None  # where py-spy's flame graphs go (``--profile``), None: off

    @classmethod
    def make(cls, quick: bool, profile: Path | None = None) -> Settings:
        if quick:
            return cls(
                True, 2.0, (1, 5), 5, (5,), 2, (100, 1000), 1.5, (12,), 5, (1, 2, 4), (1, 2),
                profile=profile,
            )  # fmt: skip
        return cls(
            False, 10.0, (1, 50, 200), 50, (25, 50, 100), 25, (100, 10_000, 100_000), 5.0,
            profile=profile,
        )  # fmt: skip


@dataclass
class Row:
    """One line of ``latest.json``'s ``scenarios`` (the issue's schema; None = not applicable)."""

    name: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    failures: int = 0
    seconds: float | None = None
    pss_bytes: int | None = None
    networks: int | None = None
    instances: int | None = None
    ports: int | None = None
    note: str = field(default="", compare=False)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("note")
        for key in ("rps", "p50_ms", "p99_ms", "seconds"):
            if data[key] is not None:
                data[key] = round(data[key], 3)
        return data


# -- tools -----------------------------------------------------------------------------------


def need_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None and not Path(f"/usr/sbin/{n}").exists()]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run `make install`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lua_headers(path: Path, headers: dict[str, str]) -> Path:
    """A wrk script that sets ``headers`` on every request."""
    path.write_text("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()))
    return path


# -- wrk -------------------------------------------------------------------------------------


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50, p99 (ms) and failures (non-2xx + socket errors) from ``wrk --latency``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise BenchError(f"unexpected wrk output:\n{out}")
    failures = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        failures += int(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failures += sum(int(x) for x in errors.groups())
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)),
        "p99_ms": _ms(p99.group(1)),
        "failures": failures,
    }


async def wrk(
    url: str,
    duration: float,
    *,
    script: Path | None = None,
    namespace: str | None = None,
    connections: int = CONNECTIONS,
    threads: int = 1,
) -> dict[str, float]:
    """One wrk run (in ``namespace`` when given); one thread so that the server keeps a core."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    before = _children_cpu()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed: {err.decode(errors='replace')}")
    figures = parse_wrk(out.decode())
    # wrk's own CPU (``ip netns exec`` execs it in place): the client's share of the cores,
    # the kernel's work of its side of the connections included.
    figures["client_cpu_s"] = _children_cpu() - before
    return figures


def _children_cpu() -> float:
    """CPU seconds of this process's exited, reaped children (wrk, once it is waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_row(name: str, figures: dict[str, float], duration: float, **extra: Any) -> Row:
    return Row(
        name,
        rps=figures["rps"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        failures=int(figures["failures"]),
        seconds=duration,
        **extra,
    )


def median_row(
    name: str,
    figures: list[dict[str, float]],
    seconds: float,
    *,
    spent: float | None = None,
    client: bool = False,
    listed: str = "p99_ms",
    **extra: Any,
) -> Row:
    """One row from wrk rounds of ``seconds`` each: the median of each figure (one round's
    stall on a shared machine does not decide it), failures summed; notes the servers' CPU
    per request over all rounds (``spent`` seconds), wrk's own (``client``) and each round's
    ``listed`` figure (``rps`` or ``p99_ms``)."""
    med = {k: statistics.median(f[k] for f in figures) for k in ("rps", "p50_ms", "p99_ms")}
    med["failures"] = sum(f["failures"] for f in figures)
    row = wrk_row(name, med, seconds * len(figures), **extra)
    served = max(1.0, sum(f["rps"] for f in figures) * round(seconds))
    notes = []
    if spent:
        notes.append(f"cpu_us/request={spent * 1e6 / served:.1f}")
    if client:
        wrk_cpu = sum(f.get("client_cpu_s", 0.0) for f in figures)
        notes.append(f"client_cpu_us/request={wrk_cpu * 1e6 / served:.1f} (wrk)")
    if len(figures) > 1:
        if listed == "rps":
            notes.append("median of rounds; rounds req/s: " +
                         " ".join(f"{f['rps']:.0f}" for f in figures))  # fmt: skip
        else:
            notes.append("median of rounds; rounds p99 ms: " +
                         ", ".join(f"{f['p99_ms']:.2f}" for f in figures))  # fmt: skip
    row.note = "; ".join(notes)
    return row


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# -- memory ----------------------------------------------------------------------------------


def pss_bytes(pids: list[int]) -> int:
    """Sum of PSS (``/proc/<pid>/smaps_rollup``): shared pages counted once across processes."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids = [pid]
    for child in pids:
        try:
            text = Path(f"/proc/{child}/task/{child}/children").read_text()
        except OSError:
            continue
        pids.extend(int(p) for p in text.split())
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (``/proc/<pid>/stat`` fields 14, 15)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_bytes": int(mem) * 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.split("\n", 1)[0].strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
