"""The inventory: what exists in the cloud (Nova's and Neutron's databases in one store).

``Store.open(config)`` gives the store; reads go through :mod:`.queries`, changes through
:mod:`.projects`, :mod:`.network_ops` and :mod:`.compute_ops` (which uses network_ops for a
server's ports, never the other way) inside ``store.transact``; each change records what it
touches (:mod:`.changes`).
"""

from cloudmeta.inventory.errors import (
    Conflict,
    Invalid,
    InventoryError,
    InventoryUnavailable,
    NotFound,
)
from cloudmeta.inventory.queries import ServerBundle
from cloudmeta.inventory.store import ChangeRecord, Store, Tx

__all__ = [
    "ChangeRecord",
    "Conflict",
    "Invalid",
    "InventoryError",
    "InventoryUnavailable",
    "NotFound",
    "ServerBundle",
    "Store",
    "Tx",
]
