"""The fault suite reuses the proxy harness (tests/proxy) and tests/support."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS, _TESTS / "proxy", _TESTS / "security", _TESTS / "metadata_api"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
