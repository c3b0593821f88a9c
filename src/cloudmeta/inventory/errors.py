"""The inventory's one exception type, carrying the HTTP status the admin API answers with."""

from __future__ import annotations

__all__ = ["Conflict", "Invalid", "InventoryError", "InventoryUnavailable", "NotFound"]


class InventoryError(Exception):
    """A request the inventory refuses; ``message`` names the field and what to do."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(InventoryError):
    status = 400


class NotFound(InventoryError):
    status = 404


class Conflict(InventoryError):
    status = 409


class InventoryUnavailable(InventoryError):
    """The database is away (a connection lost, refused or not to be had): not the request's
    fault, and worth retrying shortly (the admin API answers 503 with ``Retry-After``)."""

    status = 503

    @property
    def cause(self) -> str:
        """The database's own words, for a log line (never for an answer)."""
        return str(self.__cause__).splitlines()[0][:200] if self.__cause__ else ""
