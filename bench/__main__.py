"""``python -m bench [--quick] [--only a,b]``: every scenario, then latest.json/.md/.png.

Bounded: each scenario has a fixed duration and a hard timeout; the whole run stays under
10 minutes (under ~90 s with ``--quick``). Ctrl-C or SIGTERM cancels the running scenario,
whose ``finally`` blocks remove every namespace, link and process it made.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench import (
    bootstorm,
    chain,
    chain_aio,
    crosshost,
    limit_api,
    memory,
    metrics_cost,
    nodeloss,
    report,
    scale,
    vmstorm,
)
from bench.common import NAME_PREFIX, Row, Settings, machine

Scenario = Callable[[Settings, Path], Awaitable[list[Row]]]

# name -> (runner, hard timeout in seconds for the full run)
SCENARIOS: dict[str, tuple[Scenario, float]] = {
    "limit-api": (limit_api.run, 90),
    "chain": (chain.run, 240),
    "chain-v6": (chain.run_v6, 180),
    "chain-aio": (chain_aio.run, 360),
    "memory": (memory.run, 480),
    "bootstorm": (bootstorm.run, 180),
    "bootstorm-large": (bootstorm.run_large, 900),
    "scale": (scale.run, 240),
    "scale-ab": (scale.run_ab, 300),
    "vm-storm": (vmstorm.run, 900),
    "metrics": (metrics_cost.run, 240),
    "cross-host": (crosshost.run, 240),
    "node-loss": (nodeloss.run, 360),
}
RESULTS = Path(__file__).resolve().parent / "results"
# Diagnostics run only when named in --only (not by a full run or --quick).
OPT_IN = {"scale-ab"}


async def _main(args: argparse.Namespace) -> int:
    settings = Settings.make(args.quick, Path(args.profile) if args.profile else None)
    if args.storm_sizes:
        sizes = tuple(int(n) for n in args.storm_sizes.split(","))
        settings = dataclasses.replace(settings, storm_large_sizes=sizes)
    if args.raise_host_limits:
        settings = dataclasses.replace(settings, raise_host_limits=True)
    chosen = args.only.split(",") if args.only else [s for s in SCENARIOS if s not in OPT_IN]
    rows: list[Row] = []
    failed: list[str] = []
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.monotonic()
    for name in chosen:
        runner, limit = SCENARIOS[name]
        tmp = Path(tempfile.mkdtemp(prefix=NAME_PREFIX))
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            got = await asyncio.wait_for(runner(settings, tmp), limit / (3 if args.quick else 1))
        except Exception as exc:  # one broken scenario must not hide the others
            traceback.print_exc()
            failed.append(f"{name}: {exc}")
            got = []
        finally:
            if args.keep:
                print(f"   kept {tmp}", flush=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        for row in got:
            print(
                f"   {row.name:28} rps={row.rps or 0:9.0f} p50={row.p50_ms or 0:8.2f} "
                f"p99={row.p99_ms or 0:8.2f} failures={row.failures} "
                f"pss={row.pss_bytes or 0:>11} {row.note}",
                flush=True,
            )
        print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
        rows.extend(got)
    earlier: list[dict[str, Any]] = []
    if args.merge:
        rows = _kept(Path(args.out) / "latest.json", rows) + rows
        earlier = _earlier(Path(args.out) / "latest.json")
    _write(Path(args.out), args.quick, rows, time.monotonic() - started, earlier)
    for problem in failed:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if failed else 0


def _kept(path: Path, fresh: list[Row]) -> list[Row]:
    """The rows of an earlier ``latest.json`` that this run did not measure again."""
    if not path.exists():
        return []
    names = {row.name for row in fresh}
    old = json.loads(path.read_text())
    notes = old.get("notes", {})  # absent before notes were kept: those rows' notes are lost
    return [
        Row(**row, note=notes.get(row["name"], ""))
        for row in old["scenarios"]
        if row["name"] not in names
    ]


def _earlier(path: Path) -> list[dict[str, Any]]:
    """The machines of the runs whose rows a merge keeps: the previous run's, then those it
    had kept (newest first), so a merged file never passes old rows off as this machine's."""
    if not path.exists():
        return []
    info = dict(json.loads(path.read_text())["machine"])
    before = info.pop("kept_from", [])
    return [{k: info[k] for k in _PROVENANCE if k in info}, *before]


_PROVENANCE = ("date", "hostname", "cpu_model", "kernel", "quick")


def _write(
    out: Path, quick: bool, rows: list[Row], seconds: float, earlier: Sequence[dict[str, Any]] = ()
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["quick"] = quick
    info["total_seconds"] = round(seconds, 1)
    if earlier:
        info["kept_from"] = list(earlier)
    r = report.ratios(rows, report.marginal_pss(rows))
    report.write_json(out / "latest.json", info, rows, r)
    table = report.markdown(info, rows, r)
    (out / "latest.md").write_text(table)
    report.chart(out / "latest.png", rows)
    report.chart_targets(out / "latest-targets.png", r)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario")
    parser.add_argument("--only", default="", help=f"comma list of {','.join(SCENARIOS)}")
    parser.add_argument("--out", default=str(RESULTS), help="where latest.* go")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of OUT/latest.json that this run does not measure (with --only)",
    )
    parser.add_argument(
        "--storm-sizes", default="", help="N,N,...: the sizes of bootstorm-large (250,500,1000)"
    )
    parser.add_argument(
        "--raise-host-limits",
        action="store_true",
        help="a boot storm raises the host-wide limits it meets (neighbour table gc_thresh2/3, "
        "netdev_max_backlog) for its duration, restored after, as a network node's operator does",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave each scenario's directory (the services', dnsmasq's, dhclient's logs)",
    )
    parser.add_argument(
        "--profile", default="", help="DIR: py-spy flame graphs of the all-in-one (chain-aio)"
    )
    args = parser.parse_args()
    from cloudmeta.logs import setup_logging

    setup_logging(False, "json")
    # uvloop, as the product's services run (the chain's agent and inline proxies live here).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            sys.exit(runner.run(_main(args)))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted; everything the bench made was removed", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
