"""``python -m bench --quick`` keeps working: every scenario produced figures, no request failed.

No timed assertions: the figures themselves are for people (bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ("limit", "api", "chain-inline", "chain-process", "chain-haproxy", "memory-inline-",
            "memory-process-", "memory-haproxy-", "memory-dhcp-agent-inline-",
            "memory-dhcp-agent-w2-inline-", "boot-storm-",
            "boot-storm-cloud-init-",
            "scale-sqlite-ports-", "scale-sqlite-meta-", "scale-postgresql-ports-",
            "scale-postgresql-meta-", "chain-inline-metrics-on",
            "chain-inline-metrics-off", "chain-inline-aio", "chain-inline-aio-w1",
            "chain-haproxy-aio",
            "chain-inline-v6", "chain-inline-v4",
            "cross-host-delay", "node-loss")  # fmt: skip


@pytest.mark.root
@pytest.mark.timeout(600)
def test_quick_bench(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,  # ~150 s on a quiet machine; a loaded one (CI beside a busy job) takes longer
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    rows = {row["name"]: row for row in data["scenarios"]}
    for prefix in EXPECTED:
        found = [r for name, r in rows.items() if name == prefix or name.startswith(prefix)]
        assert found, f"no figures for {prefix} in {sorted(rows)}"
        for row in found:
            assert row["failures"] == 0, row
            if row["name"] == "node-loss":  # a failover of 0 s is the good figure
                assert row["seconds"] is not None, row
                continue
            assert row["rps"] or row["pss_bytes"] or row["seconds"], row
    assert set(data["ratios"]) == {
        "api_over_limit", "api_floor_over_limit",
        "inline_over_haproxy_rps", "inline_over_haproxy_p99",
        "inline_pss_bytes_per_network", "boot_storm_100_seconds", "scale_p99_100k_over_100",
        "boot_storm_1000_seconds", "boot_storm_max_n", "boot_storm_max_n_seconds",
        "vm_boot_seconds", "vm_storm_4_seconds",  # None in --quick: no real VMs there
        "metrics_on_over_off_rps", "metrics_on_over_off_cpu_per_request",
        "inline_over_haproxy_rps_aio", "inline_p99_ms_aio",
        "scale_p99_100k_over_100_sqlite", "scale_p99_100k_over_100_postgresql",
        "scale_ab_meta_p99_100k_over_100_sqlite",  # None unless --only scale-ab ran
        "scale_ab_meta_p99_100k_over_100_postgresql",
        "scale_ab_ports_p99_100k_over_100_sqlite", "scale_ab_ports_p99_100k_over_100_postgresql",
        "cross_host_delay_p99_ms",
        "inline_v6_over_v4_rps", "inline_v6_over_v4_p99", "inline_v6_over_v4_cpu_per_request",
        "node_loss_failover_seconds",
    }  # fmt: skip
    assert (tmp_path / "latest.md").read_text().count("\n| ") >= len(EXPECTED)
    assert (tmp_path / "latest.png").stat().st_size > 0
