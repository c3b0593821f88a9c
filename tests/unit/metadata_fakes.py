"""An in-memory :class:`MetadataSource` whose feed a test can hold at an exact point."""

from __future__ import annotations

import asyncio

from cloudmeta.api.metadata.source import Changed, ChangeKey, Loaded
from cloudmeta.documents import FixedIp, Instance, Network, Port, Subnet

PROJECT = "cmt-project"


def instance(
    server_id: str, address: str, network: str = "net-a", key_name: str | None = None
) -> Instance:
    """A server with one port holding ``address`` on ``network`` (subnet ``<network>-v4``)."""
    subnet = Subnet(f"{network}-v4", network, 4, "192.0.2.0/24", "192.0.2.1")
    port = Port(
        f"port-{server_id}",
        Network(network, network),
        "fa:16:3e:00:00:01",
        (FixedIp(address, subnet),),
    )
    return Instance(
        id=server_id,
        name=server_id,
        hostname=server_id,
        project_id=PROJECT,
        key_name=key_name,
        ports=(port,),
    )


def port_change(
    port_id: str,
    network: str,
    address: str,
    device_id: str = "",
    device_owner: str = "compute:nova",
    op: str = "create",
) -> Changed:
    """A port change as the inventory records it (touches included; ``op`` for the reader)."""
    touches = {
        "network_ids": [network],
        "subnet_ids": [f"{network}-v4"],
        "device_owners": [device_owner],
        "mac_addresses": ["fa:16:3e:00:00:99"],
        "ip_addresses": [address],
    }
    if device_id:
        touches["device_ids"] = [device_id]
    return Changed("port", port_id, touches)


def deps(server: Instance) -> frozenset[ChangeKey]:
    """What the inventory's loader says a server's documents depend on."""
    found: set[ChangeKey] = {("server", server.id)}
    for port in server.ports:
        found |= {("port", port.id), ("network", port.network.id)}
        found |= {("subnet", ip.subnet.id) for ip in port.fixed_ips}
    return frozenset(found)


class FakeSource:
    """Servers in a dict, a change log, and a token that moves on every change."""

    def __init__(self, servers: list[Instance]) -> None:
        self.servers = {s.id: s for s in servers}
        self.log: list[tuple[int, Changed]] = []
        self.revision_now = 0
        self.token = 0
        self.changes_calls = 0
        self.loads = 0
        self.changes_entered = asyncio.Event()
        self.token_read = asyncio.Event()
        self._gate: asyncio.Event | None = None
        self._load_gate: asyncio.Event | None = None
        self.load_entered = asyncio.Event()
        self._watch_tokens = False
        self._changed = asyncio.Event()

    # -- what a test does ------------------------------------------------------------------

    def commit(self, *changes: Changed, here: bool = True) -> None:
        """One write: a new revision with these changes; the token moves after the commit
        when it was written on this host (``here``), as the inventory's revision slot does."""
        self.revision_now += 1
        self.log.extend((self.revision_now, c) for c in changes)
        if here:
            self.token += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def delete(self, server_id: str, *, here: bool = True) -> None:
        server = self.servers.pop(server_id)
        ports = [
            port_change(p.id, p.network.id, ip.ip_address, server_id, op="delete")
            for p in server.ports
            for ip in p.fixed_ips
        ]
        addresses = [ip.ip_address for p in server.ports for ip in p.fixed_ips]
        self.commit(*ports, Changed("server", server_id, {"ip_addresses": addresses}), here=here)

    def hold_loads(self) -> None:
        self._load_gate = asyncio.Event()

    def release_loads(self) -> None:
        assert self._load_gate is not None
        self._load_gate.set()

    def hold_changes(self) -> None:
        self._gate = asyncio.Event()

    def release_changes(self) -> None:
        assert self._gate is not None
        self._gate.set()

    def watch_token_reads(self) -> None:
        self._watch_tokens = True

    # -- MetadataSource ------------------------------------------------------------------

    async def load(self, instance_id: str) -> Loaded | None:
        self.loads += 1
        server = self.servers.get(instance_id)  # read before we block: a racing write wins
        self.load_entered.set()
        if self._load_gate is not None:
            await self._load_gate.wait()
        return None if server is None else Loaded(server, deps(server))

    async def find_by_address(self, address: str) -> list[str]:
        return [
            s.id
            for s in self.servers.values()
            if any(ip.ip_address == address for p in s.ports for ip in p.fixed_ips)
        ]

    async def set_password_once(self, instance_id: str, password: str) -> bool:
        return False

    async def revision(self) -> int:
        return self.revision_now

    async def changes_since(self, revision: int) -> tuple[int, list[Changed] | None]:
        self.changes_calls += 1
        now = self.revision_now
        found = [c for r, c in self.log if revision < r <= now]
        self.changes_entered.set()
        if self._gate is not None:
            await self._gate.wait()
        return now, found

    async def wait_for_change(self, revision: int, timeout: float) -> int:  # noqa: ASYNC109
        event = self._changed
        if self.revision_now == revision:
            await event.wait()  # the watcher parks here; tests never time it out
        return self.revision_now

    def change_token(self) -> object:
        if self._watch_tokens:
            self.token_read.set()
        return self.token
