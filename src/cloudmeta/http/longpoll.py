"""GCE's change long-poll parameters (``?wait_for_change=true&last_etag=E&timeout_sec=S``),
read the same way by the metadata API (which waits) and by every relay in front of it (which
must not give up on an answer that is meant to come late).

Pure: a query mapping in, numbers out. A wait lasts at most :data:`MAX_TIMEOUT_SEC` (GCE caps
``timeout_sec`` too); a relay's deadline for a waiting request is its own timeout plus that
wait (:func:`relay_extension`), so an in-progress long-poll is never cut by a hop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

__all__ = ["MAX_TIMEOUT_SEC", "LongPollError", "Wait", "relay_extension", "requested_wait"]

MAX_TIMEOUT_SEC = 300
_TRUE = "true"


class LongPollError(ValueError):
    """A long-poll parameter is malformed; the message names it and its range."""


@dataclass(frozen=True, slots=True)
class Wait:
    """One long-poll: answer once the document's ETag differs from ``last_etag`` (without
    one, from the ETag when the request arrived), or after ``timeout`` seconds."""

    timeout: float
    last_etag: str | None = None


def requested_wait(query: Mapping[str, str]) -> Wait | None:
    """The wait a request asks for, or None; ``timeout_sec`` above the cap is capped."""
    if query.get("wait_for_change", "").lower() != _TRUE:
        return None
    raw = query.get("timeout_sec")
    timeout = MAX_TIMEOUT_SEC
    if raw is not None:
        try:
            timeout = int(raw)
        except ValueError:
            raise LongPollError(
                f"timeout_sec must be a whole number of seconds (0-{MAX_TIMEOUT_SEC})."
            ) from None
        if timeout < 0:
            raise LongPollError(f"timeout_sec must be 0-{MAX_TIMEOUT_SEC} seconds.")
    last = query.get("last_etag")
    return Wait(float(min(timeout, MAX_TIMEOUT_SEC)), last or None)


def relay_extension(path_qs: str) -> float:
    """Seconds a relay adds to its timeout for this request: the wait it asks for, else 0."""
    if "wait_for_change" not in path_qs:  # the hot path: no parsing
        return 0.0
    query = dict(parse_qsl(urlsplit(path_qs).query))
    try:
        wait = requested_wait(query)
    except LongPollError:
        return 0.0  # the API answers 400 at once
    return 0.0 if wait is None else wait.timeout
