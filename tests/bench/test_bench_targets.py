"""Each ratio with a target is marked met or missed in ``latest.md`` and drawn against its
bound in ``latest-targets.png``; a null 1 000-instance storm counts as missed, not as absent.

Run in a child interpreter from the repository's root (this folder's package is also named
``bench``), as the merge test does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_WRITE = """
import json, sys
from pathlib import Path
from bench.__main__ import _write
from bench.common import Row
from bench.report import headroom

out = Path(sys.argv[1])
rows = [
    Row("limit", rps=1000.0, p50_ms=1.0, p99_ms=2.0),
    Row("api", rps=600.0, p50_ms=1.0, p99_ms=2.0),  # 0.6 >= 0.5: met
    Row("chain-inline-aio", rps=2000.0, p50_ms=5.0, p99_ms=12.0),  # p99 12 > 10: missed
    Row("chain-haproxy-aio", rps=1000.0, p50_ms=5.0, p99_ms=20.0),  # 2.0 < 3.0: missed
]
_write(out, False, rows, 1.0)
checks = {
    "lower": headroom("api_over_limit", 0.6),
    "upper": headroom("inline_p99_ms_aio", 12.0),
    "null_storm": headroom("boot_storm_1000_seconds", None),
    "untargeted": headroom("inline_over_haproxy_p99", 0.5),
}
(out / "checks.json").write_text(json.dumps(checks))
"""


def test_ratios_are_marked_against_their_targets_and_charted(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path)], cwd=ROOT, check=True)
    checks = json.loads((tmp_path / "checks.json").read_text())
    assert checks["lower"] == 1.2
    assert round(checks["upper"], 3) == round(10 / 12, 3)
    assert checks["null_storm"] == 0.0
    assert checks["untargeted"] is None
    table = (tmp_path / "latest.md").read_text()
    assert "| api_over_limit | 0.6 | >= 0.5 | yes |" in table
    assert "| inline_over_haproxy_rps_aio | 2.0 | >= 3 | **no** |" in table
    assert "| inline_p99_ms_aio | 12.0 | <= 10 | **no** |" in table
    assert "| boot_storm_1000_seconds |  | <= 60 | **no** |" in table
    assert (tmp_path / "latest-targets.png").stat().st_size > 0
