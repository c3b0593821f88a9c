"""Per-instance token bucket (``metadata_rate_limit`` req/s, ``metadata_rate_burst``): pure.

One misbehaving instance in a boot storm must not starve the others; above its budget it gets
429 with ``Retry-After`` (Azure's and AWS's behaviour). Buckets that refilled completely are
forgotten, so memory follows the number of busy instances, not of all instances.
"""

from __future__ import annotations

import math

__all__ = ["RateLimiter"]

_PRUNE_EVERY = 1024


class RateLimiter:
    """``allow(key, now)`` -> 0 if admitted, else the seconds to wait before retrying."""

    __slots__ = ("_buckets", "_burst", "_calls", "_rate")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 (0 means no limit: do not build a limiter)")
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._calls = 0

    def allow(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        self._calls += 1
        if self._calls % _PRUNE_EVERY == 0:
            self._prune(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def retry_after(self, wait: float) -> str:
        """The ``Retry-After`` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
