"""Helpers of the lab page's browser tests: Debian's Chromium as playwright launches it, and
where screenshots are kept."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's (the Makefile installs it); never a downloaded one
FLAGS = [
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artefact_dir(pytest_tmp_root: Path, name: str) -> Path:
    """A dir for one test's screenshots beside pytest's numbered tmp dirs (which concurrent
    runs rotate away) in ``cmt-artefacts/``, which they leave; ``$CMT_ARTEFACTS`` chooses."""
    root = os.environ.get("CMT_ARTEFACTS")
    base = Path(root) if root else pytest_tmp_root / "cmt-artefacts"
    found = base / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
    found.mkdir(parents=True)
    return found
