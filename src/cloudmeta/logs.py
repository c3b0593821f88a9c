"""Structured logging: one event per line, naming instance, network and request, never a secret."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["get_logger", "setup_logging"]

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
