"""Typed async client of the admin API: one aiohttp session with keep-alive, one error type.

Used by the CLI and by the agents; it knows the HTTP contract of docs/interfaces.md and nothing
of the server's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import aiohttp

from cloudmeta.adminclient.types import (
    Agent,
    Change,
    DhcpInfo,
    Keypair,
    Network,
    Port,
    Project,
    Router,
    Server,
    Subnet,
)
from cloudmeta.config import Config

__all__ = ["AdminClient", "AdminError", "ChangesPage"]


class AdminError(Exception):
    """The admin API refused a request (``status`` 4xx/5xx) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ChangesPage:
    """One answer of the change feed; ``changes`` None means history was lost: resync all."""

    revision: int
    changes: list[Change] | None


class AdminClient:
    """``async with AdminClient(config) as client: await client.list_networks()``."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if config is None and (url is None or token is None):
            raise ValueError("give a Config, or both url and token")
        self._url = (url or (config.admin_url if config else "")).rstrip("/")
        if token is None and config is not None and config.admin_token is not None:
            token = config.admin_token.get_secret_value()
        self._token = token
        self._token_file: Path | None = config.admin_token_file if config else None
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._url

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _bearer(self) -> str:
        if self._token is None:
            # Read lazily: the API writes the file on its first start, maybe after we began.
            try:
                assert self._token_file is not None
                self._token = self._token_file.read_text().strip()
            except OSError as exc:
                raise AdminError(
                    0,
                    f"no admin token: cannot read {self._token_file} ({exc.strerror}); "
                    "start `cloudmeta api` once or set admin_token",
                ) from exc
        return f"Bearer {self._token}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: list[tuple[str, str]] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - aiohttp's per-request timeout
    ) -> Any:
        """Send one request; the decoded JSON body, None for 204, AdminError otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": self._bearer(), "Accept": "application/json"}
        try:
            async with self._session.request(
                method,
                f"{self._url}{path}",
                json=json,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as response:
                if response.status == 204:
                    return None
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status >= 400:
                    raise AdminError(response.status, _error_message(body, response.reason))
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise AdminError(0, f"admin API at {self._url} unreachable: {exc!r}") from exc

    # -- generic resource helpers ---------------------------------------------------------------

    async def _list(self, plural: str, params: list[tuple[str, str]] | None = None) -> Any:
        return (await self.request("GET", f"/v1/{plural}", params=params))[plural]

    async def _get(self, plural: str, singular: str, object_id: str) -> Any:
        return (await self.request("GET", f"/v1/{plural}/{object_id}"))[singular]

    async def _create(self, plural: str, singular: str, fields: dict[str, Any]) -> Any:
        body = {k: v for k, v in fields.items() if v is not None}
        return (await self.request("POST", f"/v1/{plural}", json={singular: body}))[singular]

    async def _delete(self, plural: str, object_id: str) -> None:
        await self.request("DELETE", f"/v1/{plural}/{object_id}")

    # -- projects, key pairs ----------------------------------------------------------------------

    async def list_projects(self) -> list[Project]:
        return cast(list[Project], await self._list("projects"))

    async def get_project(self, project_id: str) -> Project:
        return cast(Project, await self._get("projects", "project", project_id))

    async def create_project(self, name: str) -> Project:
        return cast(Project, await self._create("projects", "project", {"name": name}))

    async def delete_project(self, project_id: str) -> None:
        await self._delete("projects", project_id)

    async def list_keypairs(self) -> list[Keypair]:
        return cast(list[Keypair], await self._list("keypairs"))

    async def get_keypair(self, keypair_id: str) -> Keypair:
        return cast(Keypair, await self._get("keypairs", "keypair", keypair_id))

    async def create_keypair(
        self, name: str, public_key: str | None = None, project_id: str | None = None
    ) -> Keypair:
        fields = {"name": name, "public_key": public_key, "project_id": project_id}
        return cast(Keypair, await self._create("keypairs", "keypair", fields))

    async def delete_keypair(self, keypair_id: str) -> None:
        await self._delete("keypairs", keypair_id)

    # -- networks, subnets, routers, ports -----------------------------------------------------

    async def list_networks(self) -> list[Network]:
        return cast(list[Network], await self._list("networks"))

    async def get_network(self, network_id: str) -> Network:
        return cast(Network, await self._get("networks", "network", network_id))

    async def create_network(self, name: str, **fields: Any) -> Network:
        return cast(Network, await self._create("networks", "network", {"name": name, **fields}))

    async def delete_network(self, network_id: str) -> None:
        await self._delete("networks", network_id)

    async def get_network_dhcp(self, network_id: str) -> DhcpInfo:
        """Everything the DHCP agent needs for one network, in one call."""
        return cast(DhcpInfo, await self.request("GET", f"/v1/networks/{network_id}/dhcp"))

    async def list_subnets(self, network_id: str | None = None) -> list[Subnet]:
        params = [("network_id", network_id)] if network_id else None
        return cast(list[Subnet], await self._list("subnets", params))

    async def get_subnet(self, subnet_id: str) -> Subnet:
        return cast(Subnet, await self._get("subnets", "subnet", subnet_id))

    async def create_subnet(self, network_id: str, cidr: str, **fields: Any) -> Subnet:
        """Create a subnet; pass ``gateway_ip=None`` explicitly via ``no_gateway=True``."""
        no_gateway = fields.pop("no_gateway", False)
        body = {"network_id": network_id, "cidr": cidr, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        if no_gateway:
            body["gateway_ip"] = None
        answer = await self.request("POST", "/v1/subnets", json={"subnet": body})
        return cast(Subnet, answer["subnet"])

    async def delete_subnet(self, subnet_id: str) -> None:
        await self._delete("subnets", subnet_id)

    async def list_routers(self) -> list[Router]:
        return cast(list[Router], await self._list("routers"))

    async def get_router(self, router_id: str) -> Router:
        return cast(Router, await self._get("routers", "router", router_id))

    async def create_router(self, name: str, project_id: str | None = None) -> Router:
        fields = {"name": name, "project_id": project_id}
        return cast(Router, await self._create("routers", "router", fields))

    async def delete_router(self, router_id: str) -> None:
        await self._delete("routers", router_id)

    async def add_router_interface(self, router_id: str, subnet_id: str) -> Router:
        path = f"/v1/routers/{router_id}/add_router_interface"
        answer = await self.request("PUT", path, json={"subnet_id": subnet_id})
        return cast(Router, answer["router"])

    async def remove_router_interface(self, router_id: str, subnet_id: str) -> Router:
        path = f"/v1/routers/{router_id}/remove_router_interface"
        answer = await self.request("PUT", path, json={"subnet_id": subnet_id})
        return cast(Router, answer["router"])

    async def list_ports(self, **filters: str | list[str] | None) -> list[Port]:
        """Ports filtered by network_id, ip_address, mac_address, device_id, device_owner."""
        params: list[tuple[str, str]] = []
        for name, value in filters.items():
            values = [value] if isinstance(value, str) else (value or [])
            params.extend((name, v) for v in values)
        return cast(list[Port], await self._list("ports", params))

    async def get_port(self, port_id: str) -> Port:
        return cast(Port, await self._get("ports", "port", port_id))

    async def create_port(self, network_id: str, **fields: Any) -> Port:
        return cast(Port, await self._create("ports", "port", {"network_id": network_id, **fields}))

    async def delete_port(self, port_id: str) -> None:
        await self._delete("ports", port_id)

    # -- servers ------------------------------------------------------------------------------

    async def list_servers(self) -> list[Server]:
        return cast(list[Server], await self._list("servers"))

    async def get_server(self, server_id: str) -> Server:
        return cast(Server, await self._get("servers", "server", server_id))

    async def create_server(
        self, name: str, networks: list[dict[str, str]], **fields: Any
    ) -> Server:
        """``networks``: ``[{"network_id": N, "fixed_ip": IP (optional)}]``."""
        body = {"name": name, "networks": networks, **fields}
        return cast(Server, await self._create("servers", "server", body))

    async def update_server(self, server_id: str, **fields: Any) -> Server:
        """``PATCH``: ``metadata`` (null removes a key), ``add_tags``, ``remove_tags``,
        ``instance_metadata_tags`` ("enabled" or "disabled")."""
        body = {k: v for k, v in fields.items() if v is not None}
        answer = await self.request("PATCH", f"/v1/servers/{server_id}", json={"server": body})
        return cast(Server, answer["server"])

    async def delete_server(self, server_id: str) -> None:
        await self._delete("servers", server_id)

    async def get_server_password(self, server_id: str) -> str | None:
        answer = await self.request("GET", f"/v1/servers/{server_id}/password")
        return cast(str | None, answer["password"])

    async def clear_server_password(self, server_id: str) -> None:
        await self.request("DELETE", f"/v1/servers/{server_id}/password")

    # -- agents --------------------------------------------------------------------------------

    async def list_agents(self, **filters: str) -> list[Agent]:
        """Agents, optionally by ``agent_type`` and ``host``."""
        return cast(list[Agent], await self._list("agents", list(filters.items()) or None))

    async def get_agent(self, agent_id: str) -> Agent:
        return cast(Agent, await self._get("agents", "agent", agent_id))

    async def register_agent(
        self, agent_type: str, host: str, configurations: dict[str, Any] | None = None
    ) -> Agent:
        """Register (or re-register after a restart): the admin API schedules work to it."""
        fields = {"agent_type": agent_type, "host": host, "configurations": configurations}
        return cast(Agent, await self._create("agents", "agent", fields))

    async def report_agent(self, agent_id: str) -> Agent:
        """The heartbeat; AdminError 404 when the agent was forgotten (register again)."""
        answer = await self.request("PUT", f"/v1/agents/{agent_id}", json={"agent": {}})
        return cast(Agent, answer["agent"])

    async def delete_agent(self, agent_id: str) -> None:
        await self._delete("agents", agent_id)

    # -- the change feed ----------------------------------------------------------------------

    async def revision(self) -> int:
        return int((await self.request("GET", "/v1/revision"))["revision"])

    async def changes(self, since: int, timeout: float = 30.0) -> ChangesPage:  # noqa: ASYNC109
        """Long-poll until the revision passes ``since`` or ``timeout`` seconds pass."""
        params = [("since", str(since)), ("timeout", f"{timeout:g}")]
        answer = await self.request(
            "GET", "/v1/changes", params=params, timeout=timeout + self._timeout
        )
        return ChangesPage(int(answer["revision"]), answer["changes"])


def _error_message(body: Any, reason: str | None) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", reason))
    return reason or "admin API error"
