"""The inventory -> document records: :class:`StoreSource` implements :class:`MetadataSource`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager

from cloudmeta.documents import FixedIp, Instance, Keypair, Network, Port, Route, Subnet
from cloudmeta.http import RETRY_AFTER
from cloudmeta.inventory import InventoryUnavailable, ServerBundle, Store
from cloudmeta.inventory import models as m
from cloudmeta.logs import throttled_logger

from .errors import MetadataError
from .source import Changed, ChangeKey, Loaded

__all__ = ["StoreSource", "instance_from_bundle"]

_log = throttled_logger("api")
_AWAY = "The metadata inventory is temporarily unavailable. Please try again later."


@contextmanager
def _answerable() -> Iterator[None]:
    """The inventory database away: a 503 with ``Retry-After`` (the store has already read
    again once on a fresh connection), one throttled log line, no traceback."""
    try:
        yield
    except InventoryUnavailable as exc:
        _log.warning("inventory database unavailable", error=exc.cause)
        raise MetadataError(503, _AWAY, {"Retry-After": RETRY_AFTER}) from exc


def _subnet(row: m.Subnet, dhcp_ports: dict[str, str]) -> Subnet:
    # Nova's subnet meta dhcp_server: the DHCP port's address, else the gateway if DHCP is on.
    dhcp_server = dhcp_ports.get(row.id) or (row.gateway_ip if row.enable_dhcp else None)
    return Subnet(
        id=row.id,
        network_id=row.network_id,
        ip_version=row.ip_version,
        cidr=row.cidr,
        gateway_ip=row.gateway_ip,
        dns_nameservers=tuple(row.dns_nameservers or ()),
        host_routes=tuple(
            Route(str(r["destination"]), str(r["nexthop"])) for r in row.host_routes or ()
        ),
        enable_dhcp=row.enable_dhcp,
        ipv6_address_mode=row.ipv6_address_mode,
        dhcp_server=dhcp_server,
    )


def _user_data(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def instance_from_bundle(bundle: ServerBundle, dhcp_ports: dict[str, str]) -> Loaded:
    """Build the document record; ``dhcp_ports`` maps subnet id -> DHCP port address."""
    server = bundle.server
    deps: set[ChangeKey] = {("server", server.id)}
    subnets = {sid: _subnet(row, dhcp_ports) for sid, row in bundle.subnets.items()}
    ports = []
    for row in bundle.ports:
        net = bundle.networks[row.network_id]
        deps |= {("port", row.id), ("network", net.id)}
        ports.append(
            Port(
                id=row.id,
                network=Network(id=net.id, name=net.name, mtu=net.mtu),
                mac_address=row.mac_address,
                fixed_ips=tuple(
                    FixedIp(ip.ip_address, subnets[ip.subnet_id])
                    for ip in row.fixed_ips
                    if ip.subnet_id in subnets
                ),
            )
        )
    deps |= {("subnet", sid) for sid in subnets}
    keypairs: tuple[Keypair, ...] = ()
    if bundle.keypair is not None:
        deps.add(("keypair", bundle.keypair.id))
        keypairs = (Keypair(bundle.keypair.name, bundle.keypair.public_key, bundle.keypair.type),)
    instance = Instance(
        id=server.id,
        name=server.name,
        hostname=server.hostname,
        project_id=server.project_id,
        availability_zone=server.availability_zone,
        flavor=server.flavor,
        image_id=server.image_id or "",
        key_name=server.key_name,
        keypairs=keypairs,
        user_data=_user_data(server.user_data),
        metadata=bundle.metadata,
        launch_index=server.launch_index,
        created_at=server.created_at,
        ports=tuple(ports),
        password=server.password or None,
        tags=tuple(bundle.tags),
        metadata_tags=server.metadata_tags,
    )
    return Loaded(instance, frozenset(deps))


class StoreSource:
    """Reads the inventory for the metadata API; every method is one short transaction, and
    answers :class:`MetadataError` 503 while the inventory database is away."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self, instance_id: str) -> Loaded | None:
        with _answerable():
            bundle = await self._store.load_server(instance_id)
            if bundle is None:
                return None
            dhcp: dict[str, str] = {}
            if bundle.networks:
                for port in await self._store.find_ports(
                    network_id=list(bundle.networks), device_owner=[m.DEVICE_OWNER_DHCP]
                ):
                    for ip in port.fixed_ips:
                        dhcp.setdefault(ip.subnet_id, ip.ip_address)
        return instance_from_bundle(bundle, dhcp)

    async def find_by_address(self, address: str) -> list[str]:
        with _answerable():
            return [server.id for server in await self._store.find_servers_by_ip(address)]

    async def set_password_once(self, instance_id: str, password: str) -> bool:
        with _answerable():
            return await self._store.set_password_once(instance_id, password)

    async def revision(self) -> int:
        with _answerable():
            return await self._store.revision()

    async def changes_since(self, revision: int) -> tuple[int, list[Changed] | None]:
        with _answerable():
            now, changes = await self._store.changes_since(revision)
        if changes is None:
            return now, None
        return now, [Changed(c.kind, c.id, c.touches) for c in changes]

    async def wait_for_change(self, revision: int, timeout: float) -> int:  # noqa: ASYNC109
        with _answerable():
            return await self._store.wait_for_change(revision, timeout)

    def change_token(self) -> int:
        return self._store.change_token()
