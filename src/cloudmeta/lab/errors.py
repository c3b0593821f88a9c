"""The one exception of the lab."""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(Exception):
    """The lab cannot do what was asked; the message says what to do about it."""
