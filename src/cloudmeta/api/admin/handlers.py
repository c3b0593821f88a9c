"""The admin API's handlers and route table (the table also feeds ``/openapi.json``).

Each request is one store transaction: reads in ``store.read()``, changes in
``store.transact`` (which retries a request whose unique constraint raced another writer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import select

from cloudmeta.api.admin.agents import AGENT_ROUTES
from cloudmeta.api.admin.routing import (
    SCHEDULING_KEY,
    STORE_KEY,
    Handler,
    Route,
    error_response,
    parse_body,
    store_of,
)
from cloudmeta.inventory import (
    Invalid,
    NotFound,
    Tx,
    compute_ops,
    network_ops,
    projects,
    queries,
)
from cloudmeta.inventory import agents as agent_ops
from cloudmeta.inventory import views as v
from cloudmeta.inventory.models import Keypair, Network, Port, Project, Router, Server, Subnet
from cloudmeta.inventory.specs import (
    KeypairCreate,
    NetworkCreate,
    PortCreate,
    ProjectCreate,
    RouterCreate,
    RouterInterfaceSpec,
    ServerCreate,
    ServerUpdate,
    SubnetCreate,
)

__all__ = ["ROUTES", "SCHEDULING_KEY", "STORE_KEY", "Route", "error_response"]

S = TypeVar("S", bound=BaseModel)
MAX_LONG_POLL = 300.0


def _object_id(request: web.Request) -> str:
    return request.match_info["id"]


def _one(key: str, value: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({key: value}, status=status)


def _ids(objects: Any) -> list[str]:
    return [o.id for o in objects]


# -- generic list / show / delete over one model ------------------------------------------------


def _lister(
    plural: str, model: Any, view: Callable[[Any], dict[str, Any]], *options: Any
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        query = select(model).options(*options).order_by(model.name, model.id)
        network_id = request.query.getall("network_id", [])
        if network_id and hasattr(model, "network_id"):
            query = query.where(model.network_id.in_(network_id))
        async with store_of(request).read() as session:
            rows = (await session.scalars(query)).all()
            return web.json_response({plural: [view(row) for row in rows]})

    return handler


def _shower(
    singular: str, model: Any, view: Callable[[Any], dict[str, Any]], *options: Any
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        async with store_of(request).read() as session:
            found = await queries.get(session, model, _object_id(request), *options)
            return _one(singular, view(found))

    return handler


def _deleter(delete: Callable[[Tx, str], Awaitable[None]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        object_id = _object_id(request)
        await store_of(request).transact(lambda tx: delete(tx, object_id))
        return web.Response(status=204)

    return handler


# -- creates ---------------------------------------------------------------------------------


async def create_project(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, ProjectCreate, "project")

    async def work(tx: Tx) -> dict[str, Any]:
        return v.project_view(await projects.create_project(tx, spec.name))

    return _one("project", await store_of(request).transact(work), 201)


async def create_keypair(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, KeypairCreate, "keypair")

    async def work(tx: Tx) -> dict[str, Any]:
        keypair, private_key = await compute_ops.create_keypair(tx, spec)
        answer = v.keypair_view(keypair)
        if private_key is not None:
            answer["private_key"] = private_key
        return answer

    return _one("keypair", await store_of(request).transact(work), 201)


async def create_network(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, NetworkCreate, "network")

    async def work(tx: Tx) -> dict[str, Any]:
        network = await network_ops.create_network(tx, spec)
        await agent_ops.schedule(tx, request.app[SCHEDULING_KEY])
        return v.network_view(network)

    return _one("network", await store_of(request).transact(work), 201)


async def create_subnet(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, SubnetCreate, "subnet")

    async def work(tx: Tx) -> dict[str, Any]:
        return v.subnet_view(await network_ops.create_subnet(tx, spec))

    return _one("subnet", await store_of(request).transact(work), 201)


async def create_port(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, PortCreate, "port")

    async def work(tx: Tx) -> dict[str, Any]:
        port = await network_ops.create_port(tx, spec)
        return v.port_view(await network_ops.load_port(tx, port.id))

    return _one("port", await store_of(request).transact(work), 201)


async def create_router(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, RouterCreate, "router")

    async def work(tx: Tx) -> dict[str, Any]:
        router = await network_ops.create_router(tx, spec)
        await agent_ops.schedule(tx, request.app[SCHEDULING_KEY])
        return v.router_view(await network_ops.load_router(tx, router.id))

    return _one("router", await store_of(request).transact(work), 201)


async def create_server(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, ServerCreate, "server")

    async def work(tx: Tx) -> dict[str, Any]:
        return v.server_view(await compute_ops.create_server(tx, spec))

    return _one("server", await store_of(request).transact(work), 201)


async def update_server(request: web.Request) -> web.StreamResponse:
    spec = await parse_body(request, ServerUpdate, "server")
    server_id = _object_id(request)

    async def work(tx: Tx) -> dict[str, Any]:
        return v.server_view(await compute_ops.update_server(tx, server_id, spec))

    return _one("server", await store_of(request).transact(work))


def _router_interface(add: bool) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        spec = await parse_body(request, RouterInterfaceSpec, None)
        router_id = _object_id(request)
        change = network_ops.add_router_interface if add else network_ops.remove_router_interface

        async def work(tx: Tx) -> dict[str, Any]:
            return v.router_view(await change(tx, router_id, spec.subnet_id))

        return _one("router", await store_of(request).transact(work))

    return handler


# -- agents' reads ------------------------------------------------------------------------------


async def list_ports(request: web.Request) -> web.StreamResponse:
    filters = {name: request.query.getall(name, []) for name in request.query}
    async with store_of(request).read() as session:
        return web.json_response({"ports": await queries.find_port_views(session, **filters)})


async def network_dhcp(request: web.Request) -> web.StreamResponse:
    network_id = _object_id(request)
    async with store_of(request).read() as session:
        network = await queries.get(session, Network, network_id)
        subnets = await session.scalars(
            select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.cidr)
        )
        ports = await queries.find_port_views(session, network_id=[network_id])
        routers = await queries.router_ids_on_network(session, network_id)
        return web.json_response(
            {
                "network": v.network_view(network),
                "subnets": [v.subnet_view(s) for s in subnets],
                "ports": ports,
                "routers": routers,
            }
        )


def _number(request: web.Request, name: str, default: float | None, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise Invalid(f"{name}: required query parameter")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(f"{name}: {raw[:40]!r} is not a number") from None
    if not 0 <= value <= high:
        raise Invalid(f"{name}: must be between 0 and {high:g}")
    return value


async def changes(request: web.Request) -> web.StreamResponse:
    since = _number(request, "since", None, 2**62)
    if since != int(since):
        raise Invalid("since: must be an integer revision")
    timeout = _number(request, "timeout", 30.0, MAX_LONG_POLL)
    store = store_of(request)
    await store.wait_for_change(int(since), timeout)
    revision, found = await store.changes_since(int(since))
    listed = None if found is None else [c.as_dict() for c in found]
    return web.json_response({"revision": revision, "changes": listed})


async def revision(request: web.Request) -> web.StreamResponse:
    return web.json_response({"revision": await store_of(request).revision()})


async def server_password(request: web.Request) -> web.StreamResponse:
    async with store_of(request).read() as session:
        server = await queries.get(session, Server, _object_id(request))
        return web.json_response({"password": server.password})


async def clear_server_password(request: web.Request) -> web.StreamResponse:
    server_id = _object_id(request)
    if not await store_of(request).clear_password(server_id):
        raise NotFound(f"server_id: no server with id {server_id!r}")
    return web.Response(status=204)


_SERVER_OPTIONS = queries.server_options()
_ROUTER_OPTIONS = queries.router_options()
_PORT_OPTIONS = queries.port_options()


def _crud(
    plural: str,
    singular: str,
    model: Any,
    view: Callable[[Any], dict[str, Any]],
    create: Handler,
    spec: type[BaseModel],
    delete: Callable[[Tx, str], Awaitable[None]],
    options: list[Any],
    list_handler: Handler | None = None,
    query: tuple[str, ...] = (),
) -> list[Route]:
    base, item = f"/v1/{plural}", f"/v1/{plural}/{{id}}"
    return [
        Route(
            "GET",
            base,
            list_handler or _lister(plural, model, view, *options),
            f"List {plural}",
            answer=plural,
            query=query,
        ),
        Route("POST", base, create, f"Create a {singular}", spec, singular, singular),
        Route(
            "GET",
            item,
            _shower(singular, model, view, *options),
            f"Show a {singular}",
            answer=singular,
        ),
        Route("DELETE", item, _deleter(delete), f"Delete a {singular}"),
    ]


_PORT_QUERY = ("network_id", "ip_address", "mac_address", "device_id", "device_owner")

ROUTES: list[Route] = [
    Route("GET", "/v1/revision", revision, "The store's current revision", answer="revision"),
    Route(
        "GET",
        "/v1/changes",
        changes,
        "Long-poll for changes after a revision",
        answer="changes",
        query=("since", "timeout"),
    ),
    *_crud(
        "projects",
        "project",
        Project,
        v.project_view,
        create_project,
        ProjectCreate,
        projects.delete_project,
        [],
    ),
    *_crud(
        "keypairs",
        "keypair",
        Keypair,
        v.keypair_view,
        create_keypair,
        KeypairCreate,
        compute_ops.delete_keypair,
        [],
    ),
    *_crud(
        "networks",
        "network",
        Network,
        v.network_view,
        create_network,
        NetworkCreate,
        network_ops.delete_network,
        [],
    ),
    Route(
        "GET",
        "/v1/networks/{id}/dhcp",
        network_dhcp,
        "What the DHCP agent needs for a network",
        answer="network",
    ),
    *_crud(
        "subnets",
        "subnet",
        Subnet,
        v.subnet_view,
        create_subnet,
        SubnetCreate,
        network_ops.delete_subnet,
        [],
        query=("network_id",),
    ),
    *_crud(
        "routers",
        "router",
        Router,
        v.router_view,
        create_router,
        RouterCreate,
        network_ops.delete_router,
        _ROUTER_OPTIONS,
    ),
    Route(
        "PUT",
        "/v1/routers/{id}/add_router_interface",
        _router_interface(True),
        "Plug a router into a subnet (its gateway address)",
        RouterInterfaceSpec,
        None,
        "router",
    ),
    Route(
        "PUT",
        "/v1/routers/{id}/remove_router_interface",
        _router_interface(False),
        "Unplug a router from a subnet",
        RouterInterfaceSpec,
        None,
        "router",
    ),
    *_crud(
        "ports",
        "port",
        Port,
        v.port_view,
        create_port,
        PortCreate,
        network_ops.delete_port,
        _PORT_OPTIONS,
        list_handler=list_ports,
        query=_PORT_QUERY,
    ),
    *_crud(
        "servers",
        "server",
        Server,
        v.server_view,
        create_server,
        ServerCreate,
        compute_ops.delete_server,
        _SERVER_OPTIONS,
    ),
    Route(
        "PATCH",
        "/v1/servers/{id}",
        update_server,
        "Set or remove a server's metadata items and tags (server set|unset)",
        ServerUpdate,
        "server",
        "server",
    ),
    Route(
        "GET",
        "/v1/servers/{id}/password",
        server_password,
        "The password the instance posted",
        answer="password",
    ),
    Route(
        "DELETE",
        "/v1/servers/{id}/password",
        clear_server_password,
        "Clear the password so the instance may post a new one",
    ),
    *AGENT_ROUTES,
]
