"""``/v1/agents``: agents register (POST), report (PUT), and show what they host (GET).

A heartbeat is a quiet write (no revision, nobody woken); only when the scheduler has
something to do (an agent died, a network waits for an agent) does it open a scheduling
transaction, so a cloud at rest costs one UPDATE per agent per ``report_interval``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloudmeta.api.admin.routing import (
    SCHEDULING_KEY,
    Route,
    parse_body,
    store_of,
)
from cloudmeta.inventory import Tx
from cloudmeta.inventory import agents as ops
from cloudmeta.inventory.specs import AgentReport

__all__ = ["AGENT_ROUTES"]


async def _view(request: web.Request, agent_id: str) -> dict[str, Any]:
    down_time = request.app[SCHEDULING_KEY].agent_down_time
    async with store_of(request).read() as session:
        return (await ops.agent_views(session, down_time, agent_id))[0]


async def list_agents(request: web.Request) -> web.StreamResponse:
    down_time = request.app[SCHEDULING_KEY].agent_down_time
    async with store_of(request).read() as session:
        views = await ops.agent_views(session, down_time)
    wanted = {name: request.query.getall(name, []) for name in ("agent_type", "host")}
    views = [v for v in views if all(not w or v[n] in w for n, w in wanted.items())]
    return web.json_response({"agents": views})


async def show_agent(request: web.Request) -> web.StreamResponse:
    return web.json_response({"agent": await _view(request, request.match_info["id"])})


async def register_agent(request: web.Request) -> web.StreamResponse:
    report = await parse_body(request, AgentReport, "agent")
    scheduling = request.app[SCHEDULING_KEY]

    async def work(tx: Tx) -> str:
        return (await ops.register(tx, report, scheduling)).id

    agent_id = await store_of(request).transact(work)
    return web.json_response({"agent": await _view(request, agent_id)}, status=201)


async def report_agent(request: web.Request) -> web.StreamResponse:
    report = await parse_body(request, AgentReport, "agent")
    agent_id = request.match_info["id"]
    store, scheduling = store_of(request), request.app[SCHEDULING_KEY]
    async with store.write_quiet() as session:
        await ops.heartbeat(session, agent_id, report)
    async with store.read() as session:
        due = bool(await ops.pending_plan(session, scheduling))
    if due:
        await store.transact(lambda tx: ops.schedule(tx, scheduling))
    return web.json_response({"agent": await _view(request, agent_id)})


async def delete_agent(request: web.Request) -> web.StreamResponse:
    agent_id = request.match_info["id"]
    scheduling = request.app[SCHEDULING_KEY]
    await store_of(request).transact(lambda tx: ops.delete_agent(tx, agent_id, scheduling))
    return web.Response(status=204)


AGENT_ROUTES: list[Route] = [
    Route(
        "GET",
        "/v1/agents",
        list_agents,
        "List agents: alive, and the networks and routers each hosts",
        answer="agents",
        query=("agent_type", "host"),
    ),
    Route(
        "POST",
        "/v1/agents",
        register_agent,
        "Register an agent (or re-register it after a restart) and schedule work to it",
        AgentReport,
        "agent",
        "agent",
    ),
    Route("GET", "/v1/agents/{id}", show_agent, "Show an agent", answer="agent"),
    Route(
        "PUT",
        "/v1/agents/{id}",
        report_agent,
        "Heartbeat: the agent is alive (reschedules a dead agent's work when due)",
        AgentReport,
        "agent",
        "agent",
    ),
    Route("DELETE", "/v1/agents/{id}", delete_agent, "Forget an agent; its work moves"),
]
