"""The metadata agent embedded in a DHCP/L3 agent's process, with its proxy manager.

This is how inline mode reaches the agent: the manager holds the agent's listeners. In
``all-in-one`` one embedded agent (with its unix socket) serves both DHCP and L3 agents; a DHCP
or L3 agent started alone calls this too and, in inline mode, gets its own agent without a
unix socket. In process/haproxy mode no agent is embedded: the children talk to the separate
``cloudmeta agent`` over ``metadata_proxy_socket``.
"""

from __future__ import annotations

from cloudmeta.adminclient import AdminClient
from cloudmeta.agent.service import MetadataAgent
from cloudmeta.config import Config, ProxyMode
from cloudmeta.linux.process import ProcessMonitor
from cloudmeta.proxy.manager import MetadataProxyManager
from cloudmeta.signing import LocalMetadataApi

__all__ = ["start_embedded"]


async def start_embedded(
    config: Config,
    client: AdminClient,
    monitor: ProcessMonitor | None = None,
    *,
    unix_socket: bool = False,
    local_api: LocalMetadataApi | None = None,
) -> tuple[MetadataProxyManager, MetadataAgent | None]:
    """The manager for the DHCP/L3 agents and, if one runs here, the agent (stop it last).

    ``unix_socket=True`` (all-in-one) also serves ``metadata_proxy_socket``, so process and
    haproxy proxies of other hosts' tools can still reach this agent. ``local_api`` is the
    metadata API's handler when it runs in this process (all-in-one): the agent calls it
    with the identity it found, instead of a loopback HTTP exchange
    (:class:`~cloudmeta.agent.forward.Forwarder`).
    """
    if config.metadata_proxy_mode is not ProxyMode.INLINE and not unix_socket:
        return MetadataProxyManager(config, monitor), None
    agent = MetadataAgent(config, client, local_api)
    await agent.start(unix_socket=unix_socket)
    return MetadataProxyManager(config, monitor, inline=agent.inline), agent
