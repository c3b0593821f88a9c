"""Changes to projects, key pairs and servers (Nova's side), each inside one :class:`Tx`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from cloudmeta.inventory import network_ops, queries, rules
from cloudmeta.inventory.changes import merge_touches, port_touches, touches
from cloudmeta.inventory.errors import Conflict, Invalid
from cloudmeta.inventory.models import (
    DEVICE_OWNER_COMPUTE_PREFIX,
    Keypair,
    Port,
    Server,
    ServerMetadata,
    ServerTag,
)
from cloudmeta.inventory.projects import resolve_project
from cloudmeta.inventory.specs import KeypairCreate, PortCreate, ServerCreate, ServerUpdate
from cloudmeta.inventory.store import Tx

__all__ = [
    "create_keypair",
    "create_server",
    "delete_keypair",
    "delete_server",
    "load_server",
    "update_server",
]


async def create_keypair(tx: Tx, spec: KeypairCreate) -> tuple[Keypair, str | None]:
    """Import ``public_key``, or generate an Ed25519 pair and return its private key once."""
    project = await resolve_project(tx, spec.project_id)
    exists = await tx.session.scalar(
        select(Keypair.id).where(Keypair.project_id == project.id, Keypair.name == spec.name)
    )
    if exists:
        raise Conflict(f"name: key pair {spec.name!r} exists in project {project.name!r}")
    private_key = None
    public_key = spec.public_key
    if public_key is None:
        public_key, private_key = _generate_keypair(spec.name)
    fingerprint, key_type = rules.keypair_fingerprint(public_key)
    keypair = Keypair(
        name=spec.name,
        project_id=project.id,
        public_key=public_key.strip(),
        fingerprint=fingerprint,
        type=key_type,
    )
    tx.session.add(keypair)
    await tx.session.flush()
    tx.record("keypair", keypair.id, "create", _keypair_touches(keypair))
    return keypair, private_key


def _generate_keypair(comment: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return f"{public.decode()} {comment}", private.decode()


async def delete_keypair(tx: Tx, keypair_id: str) -> None:
    keypair = await queries.get(tx.session, Keypair, keypair_id)
    await tx.session.delete(keypair)
    tx.record("keypair", keypair_id, "delete", _keypair_touches(keypair))


def _keypair_touches(keypair: Keypair) -> dict[str, list[str]]:
    # Servers name their key pair by (project, name): a new pair may be one a server named.
    return touches(project_ids=[keypair.project_id], names=[keypair.name])


async def create_server(tx: Tx, spec: ServerCreate) -> Server:
    """Create the server and one port on each requested network, in request order."""
    rules.check_user_data(spec.user_data)
    rules.check_metadata(spec.metadata)
    rules.check_tags(spec.tags)
    project = await resolve_project(tx, spec.project_id)
    if spec.key_name is not None:
        found = await tx.session.scalar(
            select(Keypair.id).where(
                Keypair.project_id == project.id, Keypair.name == spec.key_name
            )
        )
        if not found:
            raise Invalid(f"key_name: no key pair {spec.key_name!r} in project {project.name!r}")
    hostname = spec.hostname or rules.sanitize_hostname(spec.name)
    if spec.hostname is not None and rules.sanitize_hostname(hostname) != hostname:
        raise Invalid(f"hostname: {hostname!r} is not a valid host name (letters, digits, '-')")
    server = Server(
        name=spec.name,
        hostname=hostname,
        project_id=project.id,
        availability_zone=spec.availability_zone,
        flavor=spec.flavor,
        image_id=spec.image_id,
        key_name=spec.key_name,
        user_data=spec.user_data,
        launch_index=spec.launch_index,
        config_drive=spec.config_drive,
        metadata_items=[ServerMetadata(key=k, value=v) for k, v in spec.metadata.items()],
        tag_items=[ServerTag(tag=t) for t in dict.fromkeys(spec.tags)],
        metadata_tags=spec.instance_metadata_tags == "enabled",
    )
    tx.session.add(server)
    await tx.session.flush()
    owner = DEVICE_OWNER_COMPUTE_PREFIX + (spec.availability_zone or "nova")
    ports: list[Port] = []
    for index, request in enumerate(spec.networks):
        fixed = None
        if request.fixed_ip is not None:
            fixed = [{"ip_address": request.fixed_ip}]
        port_spec = PortCreate.model_validate(
            {
                "network_id": request.network_id,
                "project_id": project.id,
                "device_owner": owner,
                "device_id": server.id,
                "fixed_ips": fixed,
            }
        )
        ports.append(await network_ops.create_port(tx, port_spec, field=f"networks[{index}]"))
    tx.record("server", server.id, "create", _server_touches(server, ports))
    return await load_server(tx, server.id)


async def update_server(tx: Tx, server_id: str, spec: ServerUpdate) -> Server:
    """Set or remove metadata items and tags (``server set|unset``), under create's rules.

    Recorded as a server update touching only its project: no address or port changes, so
    caches drop that server's documents and nothing else.
    """
    server = await load_server(tx, server_id)
    meta = server.meta
    for key, value in spec.metadata.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    rules.check_metadata(meta)
    rules.check_tags(spec.add_tags)
    removed = set(spec.remove_tags)
    tags = [t for t in dict.fromkeys([*server.tags, *spec.add_tags]) if t not in removed]
    rules.check_tags(tags)
    changed = meta != server.meta or tags != server.tags
    # In place: an item keeps its row (same primary key), so no delete-then-insert of a key.
    for item in list(server.metadata_items):
        if item.key not in meta:
            server.metadata_items.remove(item)
        else:
            item.value = meta.pop(item.key)
    server.metadata_items.extend(ServerMetadata(key=k, value=v) for k, v in meta.items())
    kept = set(tags)
    for tag_item in list(server.tag_items):
        if tag_item.tag not in kept:
            server.tag_items.remove(tag_item)
    had = set(server.tags)
    server.tag_items.extend(ServerTag(tag=t) for t in tags if t not in had)
    wanted = spec.instance_metadata_tags
    if wanted is not None and server.metadata_tags != (wanted == "enabled"):
        server.metadata_tags = wanted == "enabled"
        changed = True
    if changed:
        await tx.session.flush()
        tx.record("server", server.id, "update", touches(project_ids=[server.project_id]))
    return await load_server(tx, server.id)


async def load_server(tx: Tx, server_id: str) -> Server:
    return await queries.get(tx.session, Server, server_id, *queries.server_options())


async def delete_server(tx: Tx, server_id: str) -> None:
    server = await queries.get(
        tx.session, Server, server_id, selectinload(Server.ports).selectinload(Port.fixed_ips)
    )
    for port in server.ports:
        await tx.session.delete(port)
        tx.record("port", port.id, "delete", port_touches(port))
    await tx.session.delete(server)
    tx.record("server", server_id, "delete", _server_touches(server, server.ports))


def _server_touches(server: Server, ports: list[Port]) -> dict[str, list[str]]:
    own = touches(port_ids=[p.id for p in ports], project_ids=[server.project_id])
    return merge_touches(own, *(port_touches(p) for p in ports))
