"""Figures of the security and fault suites: recorded by the tests, printed by ``make soak``.

Each test calls :func:`record` with a section (``attack``, ``fuzz``, ``limit``, ``fault``,
``timing``), a name and its figures. With ``CLOUDMETA_REPORT=<file>`` the rows are appended to
that JSON-lines file; ``python tests/support/report.py <file>`` prints them as tables. Without
the variable the rows are only kept in memory (``ROWS``), so ``make test`` writes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "SOAK", "record", "render", "scaled"]

SOAK = os.environ.get("CLOUDMETA_SOAK") == "1"
# Read at import: the make_config fixture clears CLOUDMETA_* variables while a test runs.
TARGET = os.environ.get("CLOUDMETA_REPORT")
ROWS: list[dict[str, Any]] = []


def scaled(default: int, soak: int) -> int:
    """A bounded count for ``make test``, a large one under ``CLOUDMETA_SOAK=1``."""
    return soak if SOAK else default


def record(section: str, name: str, **figures: Any) -> None:
    row = {"section": section, "name": name, **figures}
    ROWS.append(row)
    if TARGET:
        with Path(TARGET).open("a") as out:
            out.write(json.dumps(row, default=str) + "\n")
    print(f"[report] {json.dumps(row, default=str)}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.0f}"
    return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """One table per section; columns are the union of the rows' figures."""
    sections: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        sections[row["section"]].append(row)
    out: list[str] = []
    for section, items in sections.items():
        columns = ["name"]
        for item in items:
            columns += [k for k in item if k not in ("section", *columns)]
        table = [columns] + [[_cell(item.get(c, "")) for c in columns] for item in items]
        widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
        out.append(f"== {section} ==")
        for index, line in enumerate(table):
            out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
            if index == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path("state/soak-report.jsonl")
    if not path.exists():
        print(f"no report at {path}: run the soak first (make soak)")
        return 1
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
