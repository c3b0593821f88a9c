"""Following the inventory's changes: what the DHCP, L3 and metadata agents loop over.

The feed yields batches; a batch with ``resync=True`` tells the consumer to rebuild its whole
state from the admin API (at start, when the server's history no longer reaches back to our
revision, and after the admin API was unreachable). While the API is down it retries with
exponential backoff, so an agent survives restarts of the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cloudmeta.adminclient.client import AdminClient, AdminError
from cloudmeta.adminclient.types import Change
from cloudmeta.logs import get_logger

__all__ = ["ChangeBatch", "follow_changes"]

_log = get_logger("adminclient")


@dataclass(frozen=True)
class ChangeBatch:
    """Changes up to ``revision``; ``resync`` means: ignore ``changes``, reread everything."""

    revision: int
    changes: list[Change] = field(default_factory=list)
    resync: bool = False

    def ids(self, kind: str) -> set[str]:
        """The ids of changed objects of one kind (``network``, ``port``...)."""
        return {c["id"] for c in self.changes if c["kind"] == kind}


def _retryable(exc: AdminError) -> bool:
    return exc.status == 0 or exc.status >= 500


async def follow_changes(
    client: AdminClient,
    since: int | None = None,
    *,
    poll_timeout: float = 30.0,
    min_backoff: float = 0.2,
    max_backoff: float = 10.0,
) -> AsyncIterator[ChangeBatch]:
    """Yield change batches forever; start with a resync unless ``since`` is given."""
    backoff = min_backoff
    lost = since is None
    revision = since if since is not None else 0
    while True:
        try:
            if lost:
                revision = await client.revision()
                lost, backoff = False, min_backoff
                yield ChangeBatch(revision, [], resync=True)
                continue
            page = await client.changes(revision, poll_timeout)
            backoff = min_backoff
        except AdminError as exc:
            if not _retryable(exc):
                raise
            _log.warning("admin API unreachable; retrying", error=exc.message, delay=backoff)
            await asyncio.sleep(backoff)
            backoff = min(max_backoff, backoff * 2)
            lost = True
            continue
        if page.changes is None:
            _log.info("change history lost; resync", since=revision, revision=page.revision)
            revision = page.revision
            yield ChangeBatch(revision, [], resync=True)
        elif page.revision != revision:
            revision = page.revision
            yield ChangeBatch(revision, page.changes)
