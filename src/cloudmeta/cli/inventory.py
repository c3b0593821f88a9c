"""Inventory commands with the ``openstack`` CLI's habits: ``cloudmeta network create NAME`` ...

Arguments naming a resource take its name or its id; ``-f json`` prints the admin API's objects
(one object for create/show, an array for list).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import click

from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.cli.inventory_output import (
    format_option,
    print_list,
    print_one,
    resolve,
    run_client,
)
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config
from cloudmeta.inventory.specs import Ipv6Mode

__all__ = ["COMMANDS"]

Work = Callable[[AdminClient], Awaitable[Any]]
IPV6_MODES = list(get_args(Ipv6Mode))


def _resource_group(name: str, plural: str, columns: list[str], help_text: str) -> click.Group:
    """A command group with the generic ``list``, ``show`` and ``delete`` commands."""

    @click.group(name, help=help_text)
    def group() -> None:
        pass

    @group.command("list")
    @format_option
    @pass_config
    def list_command(config: Config, fmt: str) -> None:
        async def work(client: AdminClient) -> Any:
            return (await client.request("GET", f"/v1/{plural}"))[plural]

        print_list(run_client(config, work), columns, fmt)

    list_command.help = f"List {plural}."

    @group.command("show")
    @click.argument("ref")
    @format_option
    @pass_config
    def show_command(config: Config, ref: str, fmt: str) -> None:
        async def work(client: AdminClient) -> Any:
            object_id = await resolve(client, plural, ref)
            return (await client.request("GET", f"/v1/{plural}/{object_id}"))[name]

        print_one(run_client(config, work), fmt)

    show_command.help = f"Show one {name} (name or id)."

    @group.command("delete")
    @click.argument("refs", nargs=-1, required=True)
    @pass_config
    def delete_command(config: Config, refs: tuple[str, ...]) -> None:
        async def work(client: AdminClient) -> None:
            for ref in refs:
                await client.request("DELETE", f"/v1/{plural}/{await resolve(client, plural, ref)}")

        run_client(config, work)

    delete_command.help = f"Delete {plural} (names or ids)."
    return group


def _create(config: Config, fmt: str, work: Work) -> None:
    print_one(run_client(config, work), fmt)


def _pairs(values: tuple[str, ...], option: str, sep: str = "=") -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, found, rest = value.partition(sep)
        if not found or not key:
            raise click.BadParameter(f"{value!r}: expected KEY{sep}VALUE", param_hint=option)
        pairs.append((key, rest))
    return pairs


async def _project(client: AdminClient, ref: str | None) -> str | None:
    return None if ref is None else await resolve(client, "projects", ref)


project = _resource_group("project", "projects", ["id", "name"], "Projects (tenants).")
keypair = _resource_group(
    "keypair", "keypairs", ["id", "name", "fingerprint", "project_id"], "SSH key pairs."
)
network = _resource_group("network", "networks", ["id", "name", "mtu", "project_id"], "Networks.")
subnet = _resource_group(
    "subnet", "subnets", ["id", "name", "network_id", "cidr", "gateway_ip"], "Subnets."
)
router = _resource_group("router", "routers", ["id", "name", "interfaces"], "Routers.")
port = _resource_group(
    "port", "ports", ["id", "name", "mac_address", "fixed_ips", "device_owner"], "Ports."
)
server = _resource_group(
    "server", "servers", ["id", "name", "hostname", "key_name", "addresses"], "Servers (instances)."
)


@project.command("create")
@click.argument("name")
@format_option
@pass_config
def project_create(config: Config, name: str, fmt: str) -> None:
    """Create a project."""
    _create(config, fmt, lambda c: c.create_project(name))


@keypair.command("create")
@click.argument("name")
@click.option("--public-key", type=click.File("r"), help="OpenSSH public key file to import")
@click.option("--project", help="project name or id")
@format_option
@pass_config
def keypair_create(
    config: Config, name: str, public_key: Any, project: str | None, fmt: str
) -> None:
    """Import a public key, or generate a pair and print its private key once."""
    key = public_key.read() if public_key is not None else None

    async def work(client: AdminClient) -> Any:
        return await client.create_keypair(name, key, await _project(client, project))

    _create(config, fmt, work)


@network.command("create")
@click.argument("name")
@click.option("--project", help="project name or id")
@click.option("--mtu", type=click.IntRange(68, 9216), default=None)
@format_option
@pass_config
def network_create(
    config: Config, name: str, project: str | None, mtu: int | None, fmt: str
) -> None:
    """Create a network."""

    async def work(client: AdminClient) -> Any:
        return await client.create_network(
            name, project_id=await _project(client, project), mtu=mtu
        )

    _create(config, fmt, work)


@subnet.command("create")
@click.argument("name", required=False, default="")
@click.option("--network", "network_ref", required=True, help="network name or id")
@click.option("--cidr", "--subnet-range", "cidr", required=True, help="e.g. 192.0.2.0/24")
@click.option("--gateway", help="gateway address (default: the first address)")
@click.option("--no-gateway", is_flag=True, help="no gateway (no router, no default route)")
@click.option("--no-dhcp", is_flag=True, help="dnsmasq does not serve this subnet")
@click.option("--dns", "--dns-nameserver", "dns", multiple=True, help="DNS server (repeatable)")
@click.option("--host-route", multiple=True, help="DEST=NEXTHOP (repeatable)")
@click.option("--allocation-pool", multiple=True, help="START-END (repeatable)")
@click.option(
    "--ipv6-address-mode",
    type=click.Choice(IPV6_MODES),
    help="how instances get their IPv6 address (Neutron's values)",
)
@click.option(
    "--ipv6-ra-mode",
    type=click.Choice(IPV6_MODES),
    help="router advertisements sent by the cloud (dnsmasq in qdhcp-<net>), with these flags",
)
@format_option
@pass_config
def subnet_create(
    config: Config,
    name: str,
    network_ref: str,
    cidr: str,
    gateway: str | None,
    no_gateway: bool,
    no_dhcp: bool,
    dns: tuple[str, ...],
    host_route: tuple[str, ...],
    allocation_pool: tuple[str, ...],
    ipv6_address_mode: str | None,
    ipv6_ra_mode: str | None,
    fmt: str,
) -> None:
    """Create a subnet on a network."""
    if gateway and no_gateway:
        raise click.UsageError("--gateway and --no-gateway exclude each other")
    routes = [{"destination": d, "nexthop": n} for d, n in _pairs(host_route, "--host-route")]
    pools = [{"start": s, "end": e} for s, e in _pairs(allocation_pool, "--allocation-pool", "-")]

    async def work(client: AdminClient) -> Any:
        return await client.create_subnet(
            await resolve(client, "networks", network_ref),
            cidr,
            name=name,
            gateway_ip=gateway,
            no_gateway=no_gateway,
            enable_dhcp=not no_dhcp,
            dns_nameservers=list(dns),
            host_routes=routes,
            allocation_pools=pools or None,
            ipv6_address_mode=ipv6_address_mode,
            ipv6_ra_mode=ipv6_ra_mode,
        )

    _create(config, fmt, work)


@router.command("create")
@click.argument("name")
@click.option("--project", help="project name or id")
@format_option
@pass_config
def router_create(config: Config, name: str, project: str | None, fmt: str) -> None:
    """Create a router."""

    async def work(client: AdminClient) -> Any:
        return await client.create_router(name, await _project(client, project))

    _create(config, fmt, work)


def _router_subnet_command(add: bool) -> click.Command:
    @click.command("add-subnet" if add else "remove-subnet")
    @click.argument("router_ref")
    @click.argument("subnet_ref")
    @format_option
    @pass_config
    def command(config: Config, router_ref: str, subnet_ref: str, fmt: str) -> None:
        async def work(client: AdminClient) -> Any:
            router_id = await resolve(client, "routers", router_ref)
            subnet_id = await resolve(client, "subnets", subnet_ref)
            if add:
                return await client.add_router_interface(router_id, subnet_id)
            return await client.remove_router_interface(router_id, subnet_id)

        print_one(run_client(config, work), fmt)

    command.help = (
        "Plug ROUTER into SUBNET at its gateway address." if add else "Unplug ROUTER from SUBNET."
    )
    return command


router.add_command(_router_subnet_command(True))
router.add_command(_router_subnet_command(False))


@port.command("create")
@click.argument("name", required=False, default="")
@click.option("--network", "network_ref", required=True, help="network name or id")
@click.option("--fixed-ip", multiple=True, help="IP, or subnet=S,ip-address=IP (repeatable)")
@click.option("--mac-address")
@click.option("--device-owner", default="")
@click.option("--device-id", default="")
@format_option
@pass_config
def port_create(
    config: Config,
    name: str,
    network_ref: str,
    fixed_ip: tuple[str, ...],
    mac_address: str | None,
    device_owner: str,
    device_id: str,
    fmt: str,
) -> None:
    """Create a port (addresses are allocated unless given)."""

    async def work(client: AdminClient) -> Any:
        fixed: list[dict[str, str]] = []
        for item in fixed_ip:
            if "=" not in item:
                fixed.append({"ip_address": item})
                continue
            entry: dict[str, str] = {}
            for key, value in _pairs(tuple(item.split(",")), "--fixed-ip"):
                if key == "subnet":
                    entry["subnet_id"] = await resolve(client, "subnets", value)
                elif key == "ip-address":
                    entry["ip_address"] = value
                else:
                    raise AdminError(400, f"--fixed-ip: unknown key {key!r} (subnet, ip-address)")
            fixed.append(entry)
        return await client.create_port(
            await resolve(client, "networks", network_ref),
            name=name,
            fixed_ips=fixed or None,
            mac_address=mac_address,
            device_owner=device_owner,
            device_id=device_id,
        )

    _create(config, fmt, work)


@server.command("create")
@click.argument("name")
@click.option("--network", "networks", multiple=True, required=True, help="name or id (repeatable)")
@click.option("--fixed-ip", "fixed_ips", multiple=True, help="address on the n-th --network")
@click.option("--key-name")
@click.option("--user-data", type=click.File("rb"), help="file given to the instance as user_data")
@click.option("--property", "properties", multiple=True, help="metadata KEY=VALUE (repeatable)")
@click.option("--hostname")
@click.option("--project", help="project name or id")
@click.option("--availability-zone")
@click.option("--flavor", default="m1.small", show_default=True)
@click.option("--image", "image_id")
@click.option("--tag", "tags", multiple=True)
@click.option(
    "--instance-metadata-tags",
    type=click.Choice(["enabled", "disabled"]),
    default="disabled",
    show_default=True,
    help="show the tags in the EC2 tree (meta-data/tags/instance), as AWS's option",
)
@click.option(
    "--config-drive/--no-config-drive",
    default=False,
    help="boot with a config drive (an ISO labelled config-2 holding the metadata)",
)
@format_option
@pass_config
def server_create(
    config: Config,
    name: str,
    networks: tuple[str, ...],
    fixed_ips: tuple[str, ...],
    key_name: str | None,
    user_data: Any,
    properties: tuple[str, ...],
    hostname: str | None,
    project: str | None,
    availability_zone: str | None,
    flavor: str,
    image_id: str | None,
    tags: tuple[str, ...],
    instance_metadata_tags: str,
    config_drive: bool,
    fmt: str,
) -> None:
    """Create a server with one port on each --network."""
    if len(fixed_ips) > len(networks):
        raise click.UsageError("more --fixed-ip than --network options")
    metadata = dict(_pairs(properties, "--property"))
    encoded = base64.b64encode(user_data.read()).decode() if user_data is not None else None

    async def work(client: AdminClient) -> Any:
        requests: list[dict[str, str]] = []
        for index, ref in enumerate(networks):
            request = {"network_id": await resolve(client, "networks", ref)}
            if index < len(fixed_ips):
                request["fixed_ip"] = fixed_ips[index]
            requests.append(request)
        return await client.create_server(
            name,
            requests,
            hostname=hostname,
            key_name=key_name,
            user_data=encoded,
            metadata=metadata,
            project_id=await _project(client, project),
            availability_zone=availability_zone,
            flavor=flavor,
            image_id=image_id,
            tags=list(tags),
            instance_metadata_tags=instance_metadata_tags,
            config_drive=config_drive,
        )

    _create(config, fmt, work)


@server.command("set")
@click.argument("ref")
@click.option("--property", "properties", multiple=True, help="metadata KEY=VALUE (repeatable)")
@click.option("--tag", "tags", multiple=True, help="tag to add (repeatable)")
@click.option(
    "--instance-metadata-tags",
    type=click.Choice(["enabled", "disabled"]),
    help="show the tags in the EC2 tree (meta-data/tags/instance)",
)
@pass_config
def server_set(
    config: Config,
    ref: str,
    properties: tuple[str, ...],
    tags: tuple[str, ...],
    instance_metadata_tags: str | None,
) -> None:
    """Set metadata properties and add tags (``openstack server set``); the instance sees
    them in its next request."""
    metadata: dict[str, str | None] = dict(_pairs(properties, "--property"))

    async def work(client: AdminClient) -> Any:
        return await client.update_server(
            await resolve(client, "servers", ref),
            metadata=metadata,
            add_tags=list(tags),
            instance_metadata_tags=instance_metadata_tags,
        )

    run_client(config, work)


@server.command("unset")
@click.argument("ref")
@click.option("--property", "properties", multiple=True, help="metadata KEY to remove (repeatable)")
@click.option("--tag", "tags", multiple=True, help="tag to remove (repeatable)")
@pass_config
def server_unset(
    config: Config, ref: str, properties: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    """Remove metadata properties and tags (``openstack server unset``)."""
    metadata: dict[str, str | None] = dict.fromkeys(properties)

    async def work(client: AdminClient) -> Any:
        return await client.update_server(
            await resolve(client, "servers", ref), metadata=metadata, remove_tags=list(tags)
        )

    run_client(config, work)


@server.group("password")
def server_password() -> None:
    """The password an instance posted to the metadata service."""


@server_password.command("show")
@click.argument("ref")
@pass_config
def server_password_show(config: Config, ref: str) -> None:
    """Print the (encrypted) password the instance posted; nothing if none."""

    async def work(client: AdminClient) -> str | None:
        return await client.get_server_password(await resolve(client, "servers", ref))

    click.echo(run_client(config, work) or "")


@server_password.command("clear")
@click.argument("ref")
@pass_config
def server_password_clear(config: Config, ref: str) -> None:
    """Clear the password so the instance may post a new one."""

    async def work(client: AdminClient) -> None:
        await client.clear_server_password(await resolve(client, "servers", ref))

    run_client(config, work)


COMMANDS: list[click.Command] = [project, keypair, network, subnet, router, port, server]
