"""ebtables inside a namespace of ours: one table replaced atomically with ``ebtables-restore``.

Only ever run in a namespace we created (the bridge namespace), never on the host: a caller
passing ``None`` gets a LinuxError. ``ebtables-restore`` (the nft flavour here) replaces the
whole table in one transaction, so there is no moment with half a ruleset.
"""

from __future__ import annotations

import shutil

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import run

__all__ = ["apply_ebtables", "ebtables_available", "list_ebtables"]

_RESTORE = ("ebtables-nft-restore", "ebtables-restore")
_LIST = ("ebtables-nft", "ebtables")


def _tool(candidates: tuple[str, ...]) -> str:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise LinuxError(f"none of {', '.join(candidates)} is installed (Debian package ebtables)")


def ebtables_available() -> bool:
    return any(shutil.which(name) for name in _RESTORE)


def _check(namespace: str | None) -> str:
    if not namespace:
        raise LinuxError("ebtables rules are only written inside a namespace of ours, not the host")
    return namespace


async def apply_ebtables(namespace: str | None, document: str) -> None:
    """Replace the tables ``document`` (ebtables-save format) names, inside ``namespace``."""
    await run([_tool(_RESTORE)], namespace=_check(namespace), input=document.encode())


async def list_ebtables(namespace: str | None, table: str = "nat") -> str:
    """``ebtables -t <table> -L`` inside ``namespace`` (for logs and tests)."""
    result = await run([_tool(_LIST), "-t", table, "-L"], namespace=_check(namespace))
    return result.stdout
