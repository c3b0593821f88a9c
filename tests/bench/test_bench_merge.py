"""``python -m bench --only X --merge`` keeps the other rows whole: their notes too, and so the
ratios read from a note (the metrics' CPU per request) survive a later run of another scenario;
and the file says which earlier run's machine the kept rows came from.

Run in a child interpreter from the repository's root, as the quick bench test does: this
folder's package is also named ``bench``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_MERGE = """
import sys
from pathlib import Path
from bench.__main__ import _earlier, _kept, _write
from bench.common import Row

out = Path(sys.argv[1])
metrics = [
    Row("chain-inline-metrics-on", rps=980.0, note="cpu_us/request=330.0; rounds req/s: 980"),
    Row("chain-inline-metrics-off", rps=1000.0, note="cpu_us/request=300.0; rounds req/s: 1000"),
]
_write(out, False, [Row("limit", rps=5.0, note="first"), *metrics], 1.0)
# A later run of another scenario only, merged: the metrics rows come from latest.json.
fresh = [Row("limit", rps=6.0, note="second")]
path = out / "latest.json"
_write(out, False, _kept(path, fresh) + fresh, 1.0, _earlier(path))
"""


def test_a_merge_keeps_the_other_rows_notes_and_their_ratios(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", _MERGE, str(tmp_path)], cwd=ROOT, check=True)
    data = json.loads((tmp_path / "latest.json").read_text())
    rows = {row["name"]: row for row in data["scenarios"]}
    assert set(rows) == {"limit", "chain-inline-metrics-on", "chain-inline-metrics-off"}
    assert rows["limit"]["rps"] == 6.0
    assert "note" not in rows["limit"]  # the rows keep the schema; notes beside them
    assert data["notes"]["limit"] == "second"
    assert data["notes"]["chain-inline-metrics-on"].startswith("cpu_us/request=330.0")
    assert data["ratios"]["metrics_on_over_off_rps"] == 0.98
    assert data["ratios"]["metrics_on_over_off_cpu_per_request"] == 1.1
    table = (tmp_path / "latest.md").read_text()
    assert "cpu_us/request=300.0; rounds req/s: 1000" in table
    # The first run's machine, as the kept rows' provenance (in the table's header too).
    [first] = data["machine"]["kept_from"]
    assert set(first) == {"date", "hostname", "cpu_model", "kernel", "quick"}
    assert f"kept from earlier runs (`--merge`), newest first: {first['date']}" in table
