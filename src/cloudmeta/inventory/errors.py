"""The inventory's one exception type, carrying the HTTP status the admin API answers with."""

from __future__ import annotations

__all__ = ["Conflict", "Invalid", "InventoryError", "NotFound"]


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
