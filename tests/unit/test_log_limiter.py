"""Error-path log lines are rate-limited per event (cloudmeta.logs.LogLimiter), on a fake
clock: a burst passes, the rest are dropped and counted into the next line let through."""

from __future__ import annotations

from typing import Any

from cloudmeta.logs import LogLimiter, ThrottledLogger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


def test_a_burst_passes_then_lines_are_dropped_until_the_window_ends() -> None:
    clock = Clock()
    limiter = LogLimiter(burst=3, window=10.0, clock=clock)
    assert [limiter.allow("e") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 9.9
    assert limiter.allow("e") is None
    clock.now += 0.1
    assert limiter.allow("e") == 3  # a new window; the drops of the last one are reported
    assert limiter.allow("e") == 0


def test_events_have_their_own_budgets() -> None:
    limiter = LogLimiter(burst=1, window=10.0, clock=Clock())
    assert limiter.allow("a") == 0
    assert limiter.allow("a") is None
    assert limiter.allow("b") == 0


def test_throttled_logger_bounds_a_flood_and_says_how_much_it_dropped() -> None:
    clock = Clock()
    sink = Sink()
    log = ThrottledLogger(sink, LogLimiter(burst=2, window=60.0, clock=clock))
    for i in range(1000):  # an attacker's flood of unknown addresses
        log.warning("no unique port for the caller", ip=f"192.0.2.{i % 250}")
    log.error("other event")
    assert [(lvl, event) for lvl, event, _ in sink.lines] == [
        ("warning", "no unique port for the caller"),
        ("warning", "no unique port for the caller"),
        ("error", "other event"),
    ]
    clock.now += 60
    log.warning("no unique port for the caller", ip="192.0.2.1")
    assert sink.lines[-1] == (
        "warning",
        "no unique port for the caller",
        {"ip": "192.0.2.1", "suppressed": 998},
    )
