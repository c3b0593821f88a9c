"""An agent's registration and heartbeat (Neutron's ``report_state``), and what it hosts.

The agent registers before its first full sync (the admin API schedules work to it in that
same transaction), then reports every ``report_interval`` seconds. When the admin API forgot
it (a deleted agent, a new database) the next report registers it again. A report that fails
is logged and retried at the next interval: an agent keeps serving while the API is away.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudmeta.adminclient.client import AdminClient, AdminError
from cloudmeta.adminclient.feed import ChangeBatch
from cloudmeta.adminclient.types import Agent
from cloudmeta.logs import get_logger

__all__ = ["AgentReporter"]

_log = get_logger("adminclient")


class AgentReporter:
    """``reporter.refresh()`` registers if needed and returns the agent's record."""

    def __init__(
        self,
        client: AdminClient,
        agent_type: str,
        host: str,
        interval: float,
        configurations: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self.agent_type = agent_type
        self.host = host
        self._interval = interval
        self._configurations = dict(configurations or {})
        self.agent_id: str | None = None
        self._registering = asyncio.Lock()

    async def register(self) -> Agent:
        agent = await self._client.register_agent(self.agent_type, self.host, self._configurations)
        if agent["id"] != self.agent_id:
            _log.info(
                "agent registered", agent_type=self.agent_type, host=self.host, agent_id=agent["id"]
            )
        self.agent_id = agent["id"]
        return agent

    async def refresh(self) -> Agent:
        """The agent's record as the admin API has it (registering first when needed)."""
        first = await self._first_registration()
        if first is not None:
            return first
        assert self.agent_id is not None
        try:
            return await self._client.get_agent(self.agent_id)
        except AdminError as exc:
            if exc.status != 404:
                raise
            return await self.register()

    async def report(self) -> Agent:
        """One heartbeat (a registration when the admin API does not know us)."""
        first = await self._first_registration()
        if first is not None:
            return first
        assert self.agent_id is not None
        try:
            return await self._client.report_agent(self.agent_id)
        except AdminError as exc:
            if exc.status != 404:
                raise
            return await self.register()

    async def _first_registration(self) -> Agent | None:
        """Register once when nobody has yet (the heartbeat and the first sync start
        together: one of them registers, the other goes on with the id)."""
        if self.agent_id is not None:
            return None
        async with self._registering:
            if self._registered():  # by whoever held the lock before us
                return None
            return await self.register()

    def _registered(self) -> bool:
        return self.agent_id is not None

    def concerns(self, batch: ChangeBatch) -> bool:
        """Whether the batch changes what this agent hosts."""
        return any(c["kind"] == "agent" and c["id"] == self.agent_id for c in batch.changes)

    async def run(self) -> None:
        """Report now and then every ``interval`` seconds, forever."""
        while True:
            try:
                await self.report()
            except AdminError as exc:
                _log.warning(
                    "agent report failed; retrying",
                    agent_type=self.agent_type,
                    error=exc.message,
                    retry_in=self._interval,
                )
            await asyncio.sleep(self._interval)
