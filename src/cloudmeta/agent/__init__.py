"""The metadata agent (neutron-metadata-agent): identity, signing, forwarding."""

from cloudmeta.agent.embedded import start_embedded
from cloudmeta.agent.errors import AgentError
from cloudmeta.agent.identity import Caller, caller_from_forwarded, sign_instance_id
from cloudmeta.agent.lookup import Lookup, Owner, PortCache
from cloudmeta.agent.service import MetadataAgent

__all__ = [
    "AgentError",
    "Caller",
    "Lookup",
    "MetadataAgent",
    "Owner",
    "PortCache",
    "caller_from_forwarded",
    "sign_instance_id",
    "start_embedded",
]
