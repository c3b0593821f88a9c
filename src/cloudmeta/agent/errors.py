"""The metadata agent's one exception type."""

from __future__ import annotations

__all__ = ["AgentError"]


class AgentError(Exception):
    """The metadata agent cannot start or cannot answer; the message says what to fix."""
