"""Neutron's metadata rate limit (``[metadata_rate_limiting]``) for the agent: pure.

Neutron has haproxy keep two stick-tables per namespace, ``http_req_rate`` over the base and
over the burst window, both per source address, and deny with 429 when either rate is greater
than its limit. haproxy counts a request when it starts tracking it, before the deny rule: the
refused ones count too, so a caller that keeps hammering stays refused. This is the same rule
over exact sliding windows (haproxy's rates approximate them), for the inline and process
modes; in haproxy mode haproxy itself enforces it (proxy/haproxy.py). Above its budget a
caller gets 429 with ``Retry-After`` (Azure's and AWS's behaviour).

Only the newest ``max(limit) + 1`` request times of a caller matter (the window holds more
than ``limit`` requests exactly when the ``limit + 1``-th newest is still in it), so memory is
bounded per caller; callers quiet for the longer window are forgotten, as haproxy's entries
expire, so memory follows the number of busy callers, not of all instances.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

__all__ = ["RateLimiter"]

_PRUNE_EVERY = 1024


class RateLimiter:
    """``allow(scope, ip, now)`` -> 0 if admitted, else the seconds to wait before retrying.

    ``scope`` is the network or router the caller reached (Neutron's tables are per
    namespace: the same address on two networks is two callers).
    """

    __slots__ = ("_calls", "_families", "_history", "_keep", "_longest", "_windows")

    def __init__(
        self,
        base_window: float,
        base_limit: int,
        burst_window: float,
        burst_limit: int,
        ip_versions: Iterable[int] = (4,),
    ) -> None:
        if min(base_window, burst_window) <= 0 or min(base_limit, burst_limit) < 1:
            raise ValueError("windows must be > 0 s and limits >= 1 request")
        self._windows = ((float(base_window), base_limit), (float(burst_window), burst_limit))
        self._families = frozenset(ip_versions)
        if not self._families or not self._families <= {4, 6}:
            raise ValueError(f"ip_versions must be 4 and/or 6, not {sorted(self._families)}")
        self._keep = max(base_limit, burst_limit) + 1
        self._longest = max(base_window, burst_window)
        self._history: dict[tuple[str, str], deque[float]] = {}
        self._calls = 0

    def limits(self, ip: str) -> bool:
        """Whether callers of ``ip``'s family are limited (``ip_versions``)."""
        return (6 if ":" in ip else 4) in self._families

    def allow(self, scope: str, ip: str, now: float, who: str | None = None) -> float:
        """Seconds to wait (0: admitted) for ``ip`` in ``scope``; ``who`` counts instead of
        the address when given (a link-local caller's MAC: it may change addresses at will)."""
        if not self.limits(ip):
            return 0.0
        self._calls += 1
        if self._calls % _PRUNE_EVERY == 0:
            self._prune(now)
        key = (scope, who or ip)
        times = self._history.get(key)
        if times is None:
            times = self._history[key] = deque(maxlen=self._keep)
        times.append(now)  # counted even if refused, as haproxy's track-sc does
        count = len(times)
        wait = 0.0
        for window, limit in self._windows:
            if count > limit and now - times[-limit - 1] < window:
                # Admitted again once the limit-th newest request has left the window.
                wait = max(wait, times[-limit] + window - now)
        return wait

    def retry_after(self, wait: float) -> str:
        """The ``Retry-After`` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))

    def _prune(self, now: float) -> None:
        quiet = [key for key, times in self._history.items() if now - times[-1] >= self._longest]
        for key in quiet:
            del self._history[key]

    def __len__(self) -> int:
        return len(self._history)
