"""Keeps the bridge namespace's port-security rules (``portsec``) in step with the networks.

The DHCP agent follows every port of every network and owns the networks' bridges, so it is the
one writer: after each network converges it hands the network's ports here, and the whole
ruleset (all networks) is re-rendered and, if it changed, applied in one transaction. With the
bridges on the host (``bridge_namespace`` empty) nothing is written (the host's tables are not
ours) and that is logged once.
"""

from __future__ import annotations

from cloudmeta import linux
from cloudmeta.dhcp.model import NetworkBundle
from cloudmeta.dhcp.portsec import (
    OLD_ND_CHAIN,
    PortFilter,
    nd_guard_chains,
    port_filters,
    render_ruleset,
)
from cloudmeta.logs import get_logger

__all__ = ["PortSecurity"]

_log = get_logger("dhcp")


class PortSecurity:
    """``await update(bundle)`` after a network converged, ``await forget(id)`` when it went."""

    def __init__(self, bridge_namespace: str | None, device_prefix: str) -> None:
        self._namespace = bridge_namespace
        self._prefix = device_prefix
        self._filters: dict[str, list[PortFilter]] = {}
        self._applied: str | None = None
        self._warned = False
        self._migrated = False

    @property
    def enabled(self) -> bool:
        return bool(self._namespace)

    async def update(self, bundle: NetworkBundle) -> None:
        self._filters[bundle.network.id] = port_filters(bundle, self._prefix)
        await self._apply()

    async def forget(self, network_id: str) -> None:
        if self._filters.pop(network_id, None) is not None:
            await self._apply()

    async def _apply(self) -> None:
        if not self._namespace:
            if not self._warned:
                _log.warning(
                    "port security (MAC/IP anti-spoofing) is off: it needs bridge_namespace"
                )
                self._warned = True
            return
        filters = [f for fs in self._filters.values() for f in fs]
        document = render_ruleset(filters)
        if document == self._applied:
            return
        await linux.apply_ebtables(self._namespace, document)
        await linux.apply_iptables(self._namespace, nd_guard_chains(filters), ipv6=True)
        if not self._migrated:  # the guard of an earlier version, in filter FORWARD
            old = linux.Chain(*OLD_ND_CHAIN)
            await linux.remove_iptables(self._namespace, [old], ipv6=True)
            self._migrated = True
        self._applied = document
        _log.debug(
            "port security applied",
            namespace=self._namespace,
            ports=sum(len(fs) for fs in self._filters.values()),
        )
