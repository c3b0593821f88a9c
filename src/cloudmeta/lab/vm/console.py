"""What the serial console log says: the image's boot report, and how far cloud-init got.

The log is QEMU's ``-serial file:``; it may hold escape codes and half-written lines, so only
a complete line with the marker and valid JSON counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cloudmeta.lab.vm.guest import REPORT_MARKER

__all__ = ["boot_stage", "parse_report", "read_report"]

_REPORT = re.compile(re.escape(REPORT_MARKER) + r" (\{.*\})\r?$", re.MULTILINE)
# cloud-init's own console lines: "Cloud-init v. 22.4.2 running 'modules:final' at ..."
_STAGE = re.compile(r"Cloud-init v\. \S+ (?:running '([\w:-]+)'|(finished)) at")
_STAGE_NAMES = {
    "init-local": "init-local",
    "init": "init",
    "modules:config": "config",
    "modules:final": "final",
    "finished": "finished",
}


def parse_report(text: str) -> dict[str, Any] | None:
    """The last complete boot report in ``text``."""
    for match in reversed(list(_REPORT.finditer(text))):
        try:
            found = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_report(path: Path) -> dict[str, Any] | None:
    return parse_report(_read(path))


def boot_stage(text: str) -> str | None:
    """The last cloud-init stage the console shows (``kernel`` before any)."""
    stages = [m.group(1) or m.group(2) for m in _STAGE.finditer(text)]
    if not stages:
        return "kernel" if text else None
    return _STAGE_NAMES.get(stages[-1], stages[-1])
