"""What the metadata API needs from the inventory: a small protocol and its record type.

The HTTP layer depends only on :class:`MetadataSource`; :mod:`.loader` implements it over the
inventory :class:`~cloudmeta.inventory.Store`, tests may implement it in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudmeta.documents import Instance

__all__ = ["ChangeKey", "Changed", "Loaded", "MetadataSource"]

# (kind, id) as the change feed names objects: ("server", id), ("port", id), ...
ChangeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Changed:
    """One change of the feed: the object and what else it touches (``network_ids``,
    ``device_ids``, ``ip_addresses``... as :mod:`cloudmeta.inventory.changes` lists them);
    ``touches`` None means "not known": the change could concern anyone."""

    kind: str
    id: str
    touches: Mapping[str, Sequence[str]] | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    """One instance and the inventory objects its documents were built from."""

    instance: Instance
    depends_on: frozenset[ChangeKey]


class MetadataSource(Protocol):
    async def load(self, instance_id: str) -> Loaded | None:
        """The instance with its ports, subnets, networks and key pair, or None."""

    async def find_by_address(self, address: str) -> list[str]:
        """Ids of the instances holding this fixed IP (source-ip identity)."""

    async def set_password_once(self, instance_id: str, password: str) -> bool:
        """Store the password unless one is set, atomically; False when one was set."""

    async def revision(self) -> int:
        """The inventory's current revision."""

    async def changes_since(self, revision: int) -> tuple[int, list[Changed] | None]:
        """The revision now and what changed after ``revision``; None means "drop everything"."""

    async def wait_for_change(self, revision: int, timeout: float) -> int:  # noqa: ASYNC109
        """Return once the revision passes ``revision`` (or after ``timeout`` seconds)."""

    def change_token(self) -> object:
        """A value that changes (compare with ``!=``) as soon as a change is committed here
        or by another process of this host; read on every request, so it must be cheap."""
