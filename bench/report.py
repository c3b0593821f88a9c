"""``latest.json`` (the issue's schema), ``latest.md`` (the tables), ``latest.png`` (req/s and
p99 per scenario) and ``latest-targets.png`` (each ratio against its issue's target)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.common import Row

KIB = 1024

# The issues' targets per ratio: (">=" or "<=", the bound). A ratio without one is a figure
# to compare between runs, not a goal.
TARGETS: dict[str, tuple[str, float]] = {
    "api_over_limit": (">=", 0.5),
    "inline_over_haproxy_rps": (">=", 2.0),
    "inline_pss_bytes_per_network": ("<=", 64 * KIB),
    "boot_storm_100_seconds": ("<=", 20.0),
    "boot_storm_1000_seconds": ("<=", 60.0),
    "scale_p99_100k_over_100_sqlite": ("<=", 1.2),
    "scale_p99_100k_over_100_postgresql": ("<=", 1.2),
    "scale_ab_meta_p99_100k_over_100_sqlite": ("<=", 1.2),
    "scale_ab_meta_p99_100k_over_100_postgresql": ("<=", 1.2),
    "scale_ab_ports_p99_100k_over_100_sqlite": ("<=", 1.2),
    "scale_ab_ports_p99_100k_over_100_postgresql": ("<=", 1.2),
    "vm_boot_seconds": ("<=", 30.0),
    "vm_storm_4_seconds": ("<=", 120.0),
    "inline_over_haproxy_rps_aio": (">=", 3.0),
    "inline_p99_ms_aio": ("<=", 10.0),
    "node_loss_failover_seconds": ("<=", 5.0),
    "metrics_on_over_off_rps": (">=", 0.95),
    "cross_host_delay_p99_ms": ("<=", 100.0),
    "inline_v6_over_v4_rps": (">=", 0.9),
}


def headroom(key: str, value: float | None) -> float | None:
    """How far ``value`` is inside its target: >= 1 met, < 1 missed (value / bound for a
    lower bound, bound / value for an upper one); None without a target or a value (a null
    ``boot_storm_1000_seconds`` is a miss, reported as 0)."""
    target = TARGETS.get(key)
    if target is None:
        return None
    op, bound = target
    if value is None:
        return 0.0 if key == "boot_storm_1000_seconds" else None
    if op == ">=":
        return value / bound
    return bound / value if value > 0 else float("inf")


def _find(rows: list[Row], name: str) -> Row | None:
    return next((r for r in rows if r.name == name), None)


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def baseline_of(name: str) -> tuple[str, str] | None:
    """(baseline row, what is compared) for a row: api / limit, chain-<mode> / chain-haproxy,
    memory-<mode>-K / memory-haproxy-K, scale-...-<n> / scale-...-100."""
    if name in ("api", "api-floor"):
        return "limit", "rps"
    if name.endswith("-aio") or "-aio-" in name:  # the all-in-one's rows among themselves
        return ("chain-haproxy-aio", "rps") if name != "chain-haproxy-aio" else None
    if name.startswith("chain-") and name != "chain-haproxy":
        return "chain-haproxy", "rps"
    if name.startswith("memory-") and not name.startswith("memory-haproxy"):
        return "memory-haproxy-" + name.rsplit("-", 1)[1], "pss"
    if name.startswith("scale-") and not name.endswith("-100"):
        return name.rsplit("-", 1)[0] + "-100", "p99"
    return None


def ratios(rows: list[Row], marginal: dict[str, float | None]) -> dict[str, float | None]:
    api, limit = _find(rows, "api"), _find(rows, "limit")
    floor = _find(rows, "api-floor")
    inline, haproxy = _find(rows, "chain-inline"), _find(rows, "chain-haproxy")
    inline_aio, haproxy_aio = _find(rows, "chain-inline-aio"), _find(rows, "chain-haproxy-aio")
    storm = _find(rows, "boot-storm-100")
    storm_1000 = _find(rows, "boot-storm-1000")
    held = max(
        (r for r in rows if re.fullmatch(r"boot-storm-\d+", r.name) and r.failures == 0),
        key=lambda r: r.instances or 0,
        default=None,
    )
    vm_boot, vm_storm = _find(rows, "vm-boot-1"), _find(rows, "vm-storm-4")
    node_loss = _find(rows, "node-loss")
    metrics_on = _find(rows, "chain-inline-metrics-on")
    metrics_off = _find(rows, "chain-inline-metrics-off")
    cross_host = _find(rows, "cross-host-delay")
    inline_v6, inline_v4 = _find(rows, "chain-inline-v6"), _find(rows, "chain-inline-v4")
    scale = {
        row.name: _div(row.p99_ms, base.p99_ms)
        for row in rows
        if row.name.startswith("scale-")
        and row.name.endswith("-100000")
        and not row.name.startswith("scale-ab-")
        for base in [_find(rows, row.name.rsplit("-", 1)[0] + "-100")]
        if base is not None
    }
    return {
        "api_over_limit": _div(api and api.rps, limit and limit.rps),
        # the serving stack alone (no work of the API's) over nginx: api_over_limit's bound
        "api_floor_over_limit": _div(floor and floor.rps, limit and limit.rps),
        "inline_over_haproxy_rps": _div(inline and inline.rps, haproxy and haproxy.rps),
        "inline_over_haproxy_p99": _div(inline and inline.p99_ms, haproxy and haproxy.p99_ms),
        "inline_pss_bytes_per_network": marginal.get("inline"),
        "boot_storm_100_seconds": _round(storm.seconds) if storm else None,
        # null unless 1 000 instances booted without a failure; then the largest N that did
        "boot_storm_1000_seconds": (
            _round(storm_1000.seconds) if storm_1000 and storm_1000.failures == 0 else None
        ),
        "boot_storm_max_n": held.instances if held else None,
        "boot_storm_max_n_seconds": _round(held.seconds) if held else None,
        "scale_p99_100k_over_100": _worst(scale.values()),
        "scale_p99_100k_over_100_sqlite": _worst(
            v for k, v in scale.items() if k.startswith("scale-sqlite-")
        ),
        "scale_p99_100k_over_100_postgresql": _worst(
            v for k, v in scale.items() if k.startswith("scale-postgresql-")
        ),
        # the same ratios from alternating rounds (scale-ab), median p99 per side
        **{
            f"scale_ab_{what}_p99_100k_over_100_{db}": _div(
                (big := _find(rows, f"scale-ab-{db}-{what}-100000")) and big.p99_ms,
                (small := _find(rows, f"scale-ab-{db}-{what}-100")) and small.p99_ms,
            )
            for what in ("meta", "ports")
            for db in ("sqlite", "postgresql")
        },
        "vm_boot_seconds": vm_boot.seconds if vm_boot else None,
        "vm_storm_4_seconds": vm_storm.seconds if vm_storm else None,
        "inline_over_haproxy_rps_aio": _div(
            inline_aio and inline_aio.rps, haproxy_aio and haproxy_aio.rps
        ),
        "inline_p99_ms_aio": inline_aio.p99_ms if inline_aio else None,
        "node_loss_failover_seconds": node_loss.seconds if node_loss else None,
        "metrics_on_over_off_rps": _div(
            metrics_on and metrics_on.rps, metrics_off and metrics_off.rps
        ),
        "metrics_on_over_off_cpu_per_request": _div(
            metrics_on and cpu_per_request(metrics_on),
            metrics_off and cpu_per_request(metrics_off),
        ),
        "cross_host_delay_p99_ms": cross_host.p99_ms if cross_host else None,
        "inline_v6_over_v4_rps": _div(inline_v6 and inline_v6.rps, inline_v4 and inline_v4.rps),
        "inline_v6_over_v4_p99": _div(
            inline_v6 and inline_v6.p99_ms, inline_v4 and inline_v4.p99_ms
        ),
        "inline_v6_over_v4_cpu_per_request": _div(
            inline_v6 and cpu_per_request(inline_v6), inline_v4 and cpu_per_request(inline_v4)
        ),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _worst(values: Iterable[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


def cpu_per_request(row: Row) -> float | None:
    """The CPU microseconds per request of a row that keeps it in its note (metrics: the
    median; chain-v6: the mean of its turns)."""
    for part in row.note.split(";"):
        if part.strip().startswith("cpu_us/request="):
            return float(part.split("=", 1)[1])
    return None


def write_json(path: Path, machine: dict[str, Any], rows: list[Row], r: dict[str, Any]) -> None:
    """The issue's schema, plus ``notes`` (row name -> note): a later ``--merge`` keeps a row
    whole, and a ratio read from a note (the metrics' CPU per request) survives it."""
    data = {
        "machine": machine,
        "scenarios": [row.as_json() for row in rows],
        "ratios": r,
        "notes": {row.name: row.note for row in rows if row.note},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else format(value, pattern)


def _memory(row: Row) -> str:
    if row.pss_bytes is None:
        return ""
    return f"{row.pss_bytes / KIB / KIB:.1f} MiB"


def _ratio(row: Row, rows: list[Row]) -> str:
    found = baseline_of(row.name)
    base = _find(rows, found[0]) if found else None
    if found is None or base is None:
        return ""
    kind = found[1]
    if kind == "rps":
        value = _div(row.rps, base.rps)
    elif kind == "pss":
        value = _div(row.pss_bytes, base.pss_bytes)
    else:
        value = _div(row.p99_ms, base.p99_ms)
    unit = {"rps": "req/s", "pss": "memory", "p99": "p99"}[kind]
    return "" if value is None else f"{value:.2f}x {base.name} ({unit})"


def markdown(machine: dict[str, Any], rows: list[Row], r: dict[str, Any]) -> str:
    lines = [
        f"# cloudmeta bench — {machine['date']}",
        "",
        f"{machine['cpus']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}, "
        f"Python {machine['python']}, {machine['wrk']}",
        "",
    ]
    if machine.get("kept_from"):
        runs = "; ".join(
            f"{m.get('date')} ({m.get('cpu_model')}, kernel {m.get('kernel')})"
            for m in machine["kept_from"]
        )
        lines += [
            "Rows this run did not measure were kept from earlier runs (`--merge`), newest "
            f"first: {runs}.",
            "",
        ]
    lines += [
        "| scenario | req/s | p50 ms | p99 ms | failures | memory (PSS) | ratio to baseline "
        "| notes |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {_fmt(row.rps, '.0f')} | {_fmt(row.p50_ms, '.2f')} | "
            f"{_fmt(row.p99_ms, '.2f')} | {row.failures} | {_memory(row)} | "
            f"{_ratio(row, rows)} | {row.note} |"
        )
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for key, value in r.items():
        target = TARGETS.get(key)
        room = headroom(key, value)
        met = "" if room is None else ("yes" if room >= 1 else "**no**")
        bound = f"{target[0]} {target[1]:g}" if target else ""
        lines.append(f"| {key} | {'' if value is None else value} | {bound} | {met} |")
    return "\n".join(lines) + "\n"


def chart(path: Path, rows: list[Row]) -> None:
    """Two horizontal bar charts: req/s and p99 per scenario that has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.rps is not None and r.p99_ms is not None]
    names = [r.name for r in shown]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * len(shown) + 1.5), sharey=True)
    left.barh(names, [r.rps or 0 for r in shown], color="tab:blue")
    left.set_xscale("log")
    left.set_xlabel("req/s (log)")
    right.barh(names, [r.p99_ms or 0 for r in shown], color="tab:orange")
    right.set_xscale("log")
    right.set_xlabel("p99 ms (log)")
    left.invert_yaxis()
    fig.suptitle("cloudmeta bench: req/s and p99 per scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def chart_targets(path: Path, r: dict[str, Any]) -> None:
    """Each ratio with a target as its headroom (1 = the bound; right of it met, left missed),
    so that one picture says which goals hold on this machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(k, room) for k in TARGETS if (room := headroom(k, r.get(k))) is not None]
    if not shown:
        return
    names = [f"{k} ({TARGETS[k][0]} {TARGETS[k][1]:g}; {r.get(k)})" for k, _ in shown]
    # A null (0) or an unbounded headroom is drawn at the axis' ends.
    values = [min(max(room, 0.05), 20.0) for _, room in shown]
    colours = ["tab:green" if room >= 1 else "tab:red" for _, room in shown]
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(shown) + 1.5))
    ax.barh(names, values, color=colours, left=0)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("headroom against the target (log; >= 1 met)")
    ax.invert_yaxis()
    fig.suptitle("cloudmeta bench: ratios against their targets")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def marginal_pss(rows: list[Row]) -> dict[str, float | None]:
    """Per mode: PSS growth per added network between the smallest and largest K measured.

    For inline mode the DHCP agent's own rows (``memory-dhcp-agent-inline-K``, the product's
    process alone) are used when present: the worst growth per network of the steps from K >= 1
    (1 -> 50, 50 -> 100, 100 -> 200, 200 -> 250); 0 -> 1 is the first network's one-time cost.
    """
    result: dict[str, float | None] = {}
    agent = sorted(
        (
            r
            for r in rows
            if r.name.startswith("memory-dhcp-agent-inline-") and r.pss_bytes and r.networks
        ),
        key=lambda r: r.networks or 0,
    )
    if len(agent) >= 2:
        result["inline"] = max(per_network_steps(agent).values())
    for mode in ("inline", "process", "haproxy"):
        found = [r for r in rows if r.name.startswith(f"memory-{mode}-") and r.pss_bytes]
        if len(found) < 2 or mode in result:
            continue
        low = min(found, key=lambda r: r.networks or 0)
        high = max(found, key=lambda r: r.networks or 0)
        added = (high.networks or 0) - (low.networks or 0)
        if added > 0:
            result[mode] = round(((high.pss_bytes or 0) - (low.pss_bytes or 0)) / added)
    return result


def per_network_steps(rows: list[Row]) -> dict[int, float]:
    """K -> PSS growth per network from the previous K measured (rows sorted by K)."""
    return {
        high.networks or 0: round(
            ((high.pss_bytes or 0) - (low.pss_bytes or 0))
            / max(1, (high.networks or 0) - (low.networks or 0))
        )
        for low, high in itertools.pairwise(rows)
    }
