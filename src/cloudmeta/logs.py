"""Structured logging: one event per line, naming instance, network and request, never a secret."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["LogLimiter", "ThrottledLogger", "get_logger", "setup_logging", "throttled_logger"]

# Error-path lines a caller can provoke (a 404 per unknown address, a malformed head): at most
# LOG_BURST lines per event per LOG_WINDOW seconds, the rest counted into the next line.
LOG_BURST = 10
LOG_WINDOW = 60.0

_SECRET_KEYS = frozenset(
    {"password", "secret", "token", "signature", "authorization", "user_data", "admin_token"}
)


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(part in key.lower() for part in _SECRET_KEYS):
            event[key] = "***"
    return event


def setup_logging(debug: bool = False, fmt: str = "auto") -> None:
    """Configure structlog for the process: JSON when not on a terminal, colours when on one."""
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(component: str) -> Any:
    """A logger bound to its component name (``api``, ``agent``, ``dhcp`` ...).

    Lazy: module-level loggers made at import time still follow :func:`setup_logging`.
    """
    return structlog.get_logger(component=component)


@dataclass(slots=True)
class _Window:
    start: float
    lines: int = 0
    suppressed: int = 0


class LogLimiter:
    """At most ``burst`` lines per key per ``window`` seconds (a fixed window per key).

    Keys are the events' messages (a fixed set in the code), not anything the caller sends, so
    an attacker varying addresses or paths can neither escape the cap nor grow the table.
    """

    def __init__(
        self,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._window = window
        self._clock = clock
        self._keys: dict[str, _Window] = {}

    def allow(self, key: str) -> int | None:
        """None: drop this line; else how many lines of ``key`` were dropped before it."""
        now = self._clock()
        state = self._keys.get(key)
        if state is None or now - state.start >= self._window:
            dropped = state.suppressed if state is not None else 0
            self._keys[key] = _Window(now, 1)
            return dropped
        if state.lines >= self._burst:
            state.suppressed += 1
            return None
        state.lines += 1
        return 0


class ThrottledLogger:
    """A logger whose lines go through a :class:`LogLimiter`; a line let through after drops
    says how many (``suppressed=N``), so the volume is bounded but nothing is silently lost."""

    def __init__(self, logger: Any, limiter: LogLimiter) -> None:
        self._logger = logger
        self._limiter = limiter

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        dropped = self._limiter.allow(event)
        if dropped is None:
            return
        if dropped:
            fields["suppressed"] = dropped
        getattr(self._logger, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("exception", event, fields)


def throttled_logger(component: str, limiter: LogLimiter | None = None) -> ThrottledLogger:
    """:func:`get_logger` for the error paths a request can drive (one limiter per logger)."""
    return ThrottledLogger(get_logger(component), limiter or LogLimiter())
