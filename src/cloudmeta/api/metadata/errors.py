"""The metadata API's one error type: an HTTP status with the message the caller reads."""

from __future__ import annotations

__all__ = ["MetadataError"]


class MetadataError(Exception):
    """A request the API refuses; ``status`` and ``message`` go back to the caller as is."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
