"""Changes to networks, subnets, ports and routers (Neutron's side), each inside one :class:`Tx`.

IP allocation takes the first free address of the subnet's pools. Two writers cannot pick the
same one: the store serialises write transactions, and UNIQUE(subnet_id, ip_address) would
refuse a double booking anyway (the store then retries the whole request).
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import func, select

from cloudmeta.inventory import queries, rules
from cloudmeta.inventory.changes import merge_touches, port_touches, touches
from cloudmeta.inventory.errors import Conflict, Invalid, NotFound
from cloudmeta.inventory.models import (
    DEVICE_OWNER_DHCP,
    DEVICE_OWNER_ROUTER_INTERFACE,
    FixedIP,
    Network,
    Port,
    Router,
    Subnet,
)
from cloudmeta.inventory.projects import project_id
from cloudmeta.inventory.specs import NetworkCreate, PortCreate, RouterCreate, SubnetCreate
from cloudmeta.inventory.store import Tx

__all__ = [
    "add_router_interface",
    "create_network",
    "create_port",
    "create_router",
    "create_subnet",
    "delete_network",
    "delete_port",
    "delete_router",
    "delete_subnet",
    "load_port",
    "load_router",
    "remove_router_interface",
]

_MAC_ATTEMPTS = 16


async def create_network(tx: Tx, spec: NetworkCreate) -> Network:
    network = Network(
        name=spec.name, project_id=await project_id(tx, spec.project_id), mtu=spec.mtu
    )
    tx.session.add(network)
    await tx.session.flush()
    tx.record("network", network.id, "create", {})
    return network


async def delete_network(tx: Tx, network_id: str) -> None:
    """Delete a network with its subnets and DHCP ports; refuse while other ports use it."""
    network = await queries.get(tx.session, Network, network_id)
    ports = (
        await tx.session.scalars(
            select(Port).where(Port.network_id == network_id).options(*queries.port_options())
        )
    ).all()
    busy = [p for p in ports if p.device_owner != DEVICE_OWNER_DHCP]
    if busy:
        raise Conflict(f"network_id: network {network.name!r} has {len(busy)} port(s) in use")
    for port in ports:
        await tx.session.delete(port)
        tx.record("port", port.id, "delete", port_touches(port))
    await tx.session.flush()
    for subnet in await tx.session.scalars(select(Subnet).where(Subnet.network_id == network_id)):
        await tx.session.delete(subnet)
        tx.record("subnet", subnet.id, "delete", touches(network_ids=[network_id]))
    await tx.session.flush()
    await tx.session.delete(network)
    tx.record("network", network_id, "delete", {})


async def create_subnet(tx: Tx, spec: SubnetCreate) -> Subnet:
    network = await queries.get(tx.session, Network, spec.network_id)
    net = rules.parse_cidr(spec.cidr)
    if spec.ip_version is not None and spec.ip_version != net.version:
        raise Invalid(f"ip_version: {spec.ip_version} does not match cidr {net}")
    rules.check_ipv6_modes(net, spec.ipv6_address_mode, spec.ipv6_ra_mode, spec.enable_dhcp)
    gateway: rules.IPAddress | None
    if "gateway_ip" not in spec.model_fields_set:
        gateway = net[1] if net.num_addresses > 2 else None
    elif spec.gateway_ip is None:
        gateway = None
    else:
        gateway = rules.parse_ip(spec.gateway_ip, "gateway_ip")
        rules.check_gateway(net, gateway)
    existing = await tx.session.scalars(select(Subnet).where(Subnet.network_id == network.id))
    for other in existing:
        if net.overlaps(ipaddress.ip_network(other.cidr)):
            raise Invalid(f"cidr: {net} overlaps subnet {other.cidr} on network {network.name!r}")
    if spec.allocation_pools is None:
        pools = rules.default_pools(net, gateway)
    else:
        pools = rules.check_pools(net, [p.model_dump() for p in spec.allocation_pools], gateway)
    for server in spec.dns_nameservers:
        rules.parse_ip(server, "dns_nameservers")
    routes = []
    for route in spec.host_routes:
        destination = rules.parse_cidr(route.destination, "host_routes.destination")
        nexthop = rules.parse_ip(route.nexthop, "host_routes.nexthop")
        if destination.version != net.version or nexthop.version != net.version:
            raise Invalid(f"host_routes: {destination} via {nexthop} is not IPv{net.version}")
        routes.append({"destination": str(destination), "nexthop": str(nexthop)})
    subnet = Subnet(
        name=spec.name,
        network_id=network.id,
        project_id=await project_id(tx, spec.project_id or network.project_id),
        ip_version=net.version,
        cidr=str(net),
        gateway_ip=str(gateway) if gateway is not None else None,
        allocation_pools=pools,
        dns_nameservers=list(spec.dns_nameservers),
        host_routes=routes,
        enable_dhcp=spec.enable_dhcp,
        ipv6_address_mode=spec.ipv6_address_mode,
        ipv6_ra_mode=spec.ipv6_ra_mode,
    )
    tx.session.add(subnet)
    await tx.session.flush()
    tx.record("subnet", subnet.id, "create", touches(network_ids=[network.id]))
    return subnet


async def delete_subnet(tx: Tx, subnet_id: str) -> None:
    subnet = await queries.get(tx.session, Subnet, subnet_id)
    rows = await tx.session.execute(
        select(FixedIP, Port)
        .join(Port, FixedIP.port_id == Port.id)
        .where(FixedIP.subnet_id == subnet_id)
        .options(*queries.port_options())
    )
    for fixed_ip, port in rows.all():
        if port.device_owner != DEVICE_OWNER_DHCP:
            raise Conflict(f"subnet_id: {subnet.cidr} has addresses in use (port {port.id})")
        # The old addresses (this one among them) before the new set loses it.
        tx.record("port", port.id, "update", port_touches(port))
        await tx.session.delete(fixed_ip)
    await tx.session.flush()
    await tx.session.delete(subnet)
    tx.record("subnet", subnet_id, "delete", touches(network_ids=[subnet.network_id]))


async def _used_addresses(tx: Tx, subnet_id: str) -> set[rules.IPAddress]:
    rows = await tx.session.scalars(
        select(FixedIP.ip_address).where(FixedIP.subnet_id == subnet_id)
    )
    return {ipaddress.ip_address(row) for row in rows}


def _auto_address(subnet: Subnet) -> bool:
    return rules.is_auto_address(subnet.ipv6_address_mode, subnet.ipv6_ra_mode)


async def _allocate(
    tx: Tx, network: Network, spec: PortCreate, field: str, mac: str
) -> list[tuple[Subnet, str]]:
    """Choose (subnet, address) pairs for a new port.

    On a SLAAC or DHCPv6-stateless subnet the address is the one the instance makes itself
    from its MAC (EUI-64), as Neutron's IPAM does, so the inventory knows it beforehand."""
    subnets = list(
        await tx.session.scalars(
            select(Subnet).where(Subnet.network_id == network.id).order_by(Subnet.ip_version)
        )
    )
    chosen: list[tuple[Subnet, str]] = []
    if spec.fixed_ips is None:
        # Like Neutron: one address of each IP version, from its first subnet with room.
        for version in (4, 6):
            for subnet in (s for s in subnets if s.ip_version == version):
                if _auto_address(subnet):
                    chosen.append((subnet, await _eui64_free(tx, subnet, mac, field)))
                    break
                free = rules.first_free(
                    subnet.allocation_pools, await _used_addresses(tx, subnet.id)
                )
                if free is not None:
                    chosen.append((subnet, str(free)))
                    break
        if subnets and not chosen:
            raise Conflict(f"{field}: no free address left on network {network.name!r}")
        return chosen
    for request in spec.fixed_ips:
        subnet = await _subnet_for(subnets, request.subnet_id, request.ip_address, network, field)
        if _auto_address(subnet):
            if request.ip_address is not None:
                raise Invalid(
                    f"{field}.ip_address: {request.ip_address} cannot be given on subnet "
                    f"{subnet.cidr}: its addresses are automatic (EUI-64 of the port's MAC)"
                )
            chosen.append((subnet, await _eui64_free(tx, subnet, mac, field)))
            continue
        used = await _used_addresses(tx, subnet.id)
        if request.ip_address is None:
            free = rules.first_free(subnet.allocation_pools, used)
            if free is None:
                raise Conflict(f"{field}: no free address left in subnet {subnet.cidr}")
            chosen.append((subnet, str(free)))
            continue
        address = rules.parse_ip(request.ip_address, f"{field}.ip_address")
        net = ipaddress.ip_network(subnet.cidr)
        low, high = net[0], net[-1]
        if address in (low, high) and net.version == 4 and net.prefixlen < 31:
            raise Invalid(f"{field}.ip_address: {address} is the network or broadcast address")
        if str(address) == subnet.gateway_ip or address in used:
            raise Conflict(f"{field}.ip_address: {address} is already used on {subnet.cidr}")
        if any(str(address) == ip for _, ip in chosen):
            raise Invalid(f"{field}.ip_address: {address} requested twice")
        chosen.append((subnet, str(address)))
    return chosen


async def _eui64_free(tx: Tx, subnet: Subnet, mac: str, field: str) -> str:
    address = rules.eui64_address(subnet.cidr, mac)
    if address in await _used_addresses(tx, subnet.id):
        raise Conflict(f"{field}: {address} (EUI-64 of {mac}) is already used on {subnet.cidr}")
    return str(address)


async def _subnet_for(
    subnets: list[Subnet],
    subnet_id: str | None,
    address: str | None,
    network: Network,
    field: str,
) -> Subnet:
    if subnet_id is not None:
        for subnet in subnets:
            if subnet.id == subnet_id:
                if address is not None:
                    ip = rules.parse_ip(address, f"{field}.ip_address")
                    if ip not in ipaddress.ip_network(subnet.cidr):
                        raise Invalid(f"{field}.ip_address: {ip} is outside subnet {subnet.cidr}")
                return subnet
        raise Invalid(f"{field}.subnet_id: no subnet {subnet_id!r} on network {network.name!r}")
    if address is None:
        raise Invalid(f"{field}: give subnet_id, ip_address or both")
    ip = rules.parse_ip(address, f"{field}.ip_address")
    for subnet in subnets:
        if ip in ipaddress.ip_network(subnet.cidr):
            return subnet
    raise Invalid(f"{field}.ip_address: {ip} is outside every subnet of network {network.name!r}")


async def create_port(tx: Tx, spec: PortCreate, field: str = "fixed_ips") -> Port:
    network = await queries.get(tx.session, Network, spec.network_id, field_name="network_id")
    if spec.mac_address is not None:
        mac = rules.normalize_mac(spec.mac_address)
        if await _mac_used(tx, network.id, mac):
            raise Conflict(f"mac_address: {mac} is already used on network {network.name!r}")
    else:
        mac = await _free_mac(tx, network.id)
    addresses = await _allocate(tx, network, spec, field, mac)
    port = Port(
        name=spec.name,
        network_id=network.id,
        project_id=await project_id(tx, spec.project_id or network.project_id),
        mac_address=mac,
        device_owner=spec.device_owner,
        device_id=spec.device_id,
        fixed_ips=[
            FixedIP(subnet_id=subnet.id, network_id=network.id, ip_address=address)
            for subnet, address in addresses
        ],
    )
    tx.session.add(port)
    await tx.session.flush()
    tx.record("port", port.id, "create", port_touches(port))
    return port


async def _mac_used(tx: Tx, network_id: str, mac: str) -> bool:
    count = await tx.session.scalar(
        select(func.count())
        .select_from(Port)
        .where(Port.network_id == network_id, Port.mac_address == mac)
    )
    return bool(count)


async def _free_mac(tx: Tx, network_id: str) -> str:
    for _ in range(_MAC_ATTEMPTS):
        mac = rules.random_mac()
        if not await _mac_used(tx, network_id, mac):
            return mac
    raise Conflict("mac_address: could not find a free MAC address; retry")


async def load_port(tx: Tx, port_id: str) -> Port:
    return await queries.get(tx.session, Port, port_id, *queries.port_options())


async def delete_port(tx: Tx, port_id: str) -> None:
    port = await load_port(tx, port_id)
    if port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE:
        raise Conflict(f"port_id: {port_id} is a router interface; remove it from the router")
    await tx.session.delete(port)
    tx.record("port", port_id, "delete", port_touches(port))


async def create_router(tx: Tx, spec: RouterCreate) -> Router:
    router = Router(name=spec.name, project_id=await project_id(tx, spec.project_id))
    tx.session.add(router)
    await tx.session.flush()
    tx.record("router", router.id, "create", {})
    return router


async def load_router(tx: Tx, router_id: str) -> Router:
    return await queries.get(tx.session, Router, router_id, *queries.router_options())


async def delete_router(tx: Tx, router_id: str) -> None:
    router = await load_router(tx, router_id)
    if router.interfaces:
        raise Conflict(f"router_id: router {router.name!r} still has interfaces; remove them")
    await tx.session.delete(router)
    tx.record("router", router_id, "delete", {})


async def add_router_interface(tx: Tx, router_id: str, subnet_id: str) -> Router:
    """Plug the router into the subnet: a port holding the subnet's gateway address."""
    router = await load_router(tx, router_id)
    subnet = await queries.get(tx.session, Subnet, subnet_id)
    if subnet.gateway_ip is None:
        raise Invalid(f"subnet_id: subnet {subnet.cidr} has no gateway_ip for the router")
    for port in router.interfaces:
        if any(ip.subnet_id == subnet_id for ip in port.fixed_ips):
            raise Conflict(f"subnet_id: router {router.name!r} is already on {subnet.cidr}")
    holder = await tx.session.scalar(
        select(FixedIP.port_id).where(
            FixedIP.subnet_id == subnet_id, FixedIP.ip_address == subnet.gateway_ip
        )
    )
    if holder is not None:
        raise Conflict(f"subnet_id: gateway {subnet.gateway_ip} is held by port {holder}")
    same_network = [p for p in router.interfaces if p.network_id == subnet.network_id]
    if subnet.ip_version == 6 and same_network:
        # An IPv6 subnet joins the router's port on that network (a dual-stack qr- device),
        # as Neutron adds IPv6 subnets to an existing port: a second qr- port on the same
        # bridge would answer ARP for the first one's address (ARP flux) and take the IPv4
        # metadata requests past the REDIRECT rule of its twin.
        port = same_network[0]
        port.fixed_ips.append(
            FixedIP(subnet_id=subnet.id, network_id=subnet.network_id, ip_address=subnet.gateway_ip)
        )
        await tx.session.flush()
        tx.record("port", port.id, "update", port_touches(port))
        tx.record("router", router.id, "update", _router_touches(router.interfaces))
        return router
    port = Port(
        network_id=subnet.network_id,
        project_id=router.project_id,
        mac_address=await _free_mac(tx, subnet.network_id),
        device_owner=DEVICE_OWNER_ROUTER_INTERFACE,
        device_id=router.id,
        fixed_ips=[
            FixedIP(subnet_id=subnet.id, network_id=subnet.network_id, ip_address=subnet.gateway_ip)
        ],
    )
    tx.session.add(port)
    await tx.session.flush()
    tx.record("port", port.id, "create", port_touches(port))
    tx.record("router", router.id, "update", _router_touches([*router.interfaces, port]))
    return await load_router(tx, router_id)


async def remove_router_interface(tx: Tx, router_id: str, subnet_id: str) -> Router:
    router = await load_router(tx, router_id)
    for port in router.interfaces:
        if any(ip.subnet_id == subnet_id for ip in port.fixed_ips) and len(port.fixed_ips) > 1:
            # A dual-stack port loses one subnet's address and stays.
            tx.record("port", port.id, "update", port_touches(port))
            for fixed in [ip for ip in port.fixed_ips if ip.subnet_id == subnet_id]:
                port.fixed_ips.remove(fixed)
            tx.record("router", router.id, "update", _router_touches(router.interfaces))
            await tx.session.flush()
            return router
        if any(ip.subnet_id == subnet_id for ip in port.fixed_ips):
            await tx.session.delete(port)
            tx.record("port", port.id, "delete", port_touches(port))
            tx.record("router", router.id, "update", _router_touches(router.interfaces))
            await tx.session.flush()
            return await load_router(tx, router_id)
    raise NotFound(f"subnet_id: router {router.name!r} has no interface on subnet {subnet_id}")


def _router_touches(interfaces: list[Port]) -> dict[str, list[str]]:
    """A router change touches the networks of its interfaces (the old and the new ones)."""
    return merge_touches(
        touches(port_ids=[p.id for p in interfaces]),
        *(
            touches(network_ids=[p.network_id], subnet_ids=[ip.subnet_id for ip in p.fixed_ips])
            for p in interfaces
        ),
    )
