"""Vendordata providers: Nova's StaticJSON (a file) and DynamicJSON (POST to HTTP targets).

Nova gives requests a (connect, read) timeout pair; a read timeout bounds each read only, so a
target trickling one byte at a time would hold ``vendor_data2.json`` for ever. Here each target
also has a total budget of connect + read timeout for the whole exchange.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp

from cloudmeta.documents import Instance
from cloudmeta.logs import get_logger

from .errors import MetadataError

__all__ = ["DynamicVendordata", "load_static", "parse_targets"]

_log = get_logger("api")
_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "openstack-nova-vendordata",
}


def load_static(path: Path | None) -> dict[str, Any]:
    """``vendordata_jsonfile_path``'s JSON object; unset means ``{}``; unreadable fails start-up."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetadataError(
            500, f"[api] vendordata_jsonfile_path {path}: cannot load JSON ({exc}); fix or unset it"
        ) from exc
    if not isinstance(data, dict):
        raise MetadataError(500, f"[api] vendordata_jsonfile_path {path}: not a JSON object")
    return data


def parse_targets(targets: list[str]) -> list[tuple[str, str]]:
    """``name@url`` pairs (split at the first ``@``); nameless and duplicate ones skipped."""
    out: list[tuple[str, str]] = []
    for target in targets:
        name, sep, url = target.partition("@")
        if not sep:
            _log.warning("vendordata target lacks a name; skipping", target=target)
        elif any(name == seen for seen, _ in out):
            _log.warning("vendordata target name repeated; skipping", target=target)
        else:
            out.append((name, url))
    return out


def facts(instance: Instance) -> dict[str, Any]:
    """The body Nova POSTs to each target (admin pass deliberately absent)."""
    user_data = instance.user_data
    return {
        "project-id": instance.project_id,
        "instance-id": instance.id,
        "image-id": instance.image_id,
        "user-data": base64.b64encode(user_data).decode() if user_data is not None else None,
        "hostname": instance.hostname,
        "metadata": dict(instance.metadata),
        "boot-roles": "",
    }


class DynamicVendordata:
    """Fetches every target concurrently; a slow or failing target is logged and left out."""

    def __init__(self, targets: list[str], connect_timeout: float, read_timeout: float) -> None:
        self.targets = parse_targets(targets)
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, instance: Instance) -> dict[str, Any]:
        if not self.targets:
            return {}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=_HEADERS)
        body = facts(instance)
        results = await asyncio.gather(
            *(self._one(n, u, body, instance.id) for n, u in self.targets)
        )
        return {
            name: value
            for (name, _), value in zip(self.targets, results, strict=True)
            if value is not None
        }

    async def _one(self, name: str, url: str, body: dict[str, Any], instance_id: str) -> Any:
        assert self._session is not None
        try:
            async with self._session.post(url, json=body, ssl=url.startswith("https://")) as resp:
                resp.raise_for_status()
                text = await resp.text()
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            _log.warning(
                "vendordata target failed; left out",
                target=name,
                url=url,
                instance_id=instance_id,
                error=repr(exc),
            )
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
