"""What a client may send to create each resource: pydantic models, also the OpenAPI schemas.

Shapes and bounds live here; rules that need the database (does the network exist, is the
address free) live in the ``*_ops`` modules. Every string refuses control characters (a NUL
is a DataError on PostgreSQL, and none belongs in a name, id or address); free text
(``public_key``, metadata values) may keep tab, CR and LF.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "AgentReport",
    "FixedIPSpec",
    "HostRouteSpec",
    "Ipv6Mode",
    "KeypairCreate",
    "MetadataTagsOption",
    "NetworkCreate",
    "NetworkRequest",
    "PoolSpec",
    "PortCreate",
    "ProjectCreate",
    "RouterCreate",
    "RouterInterfaceSpec",
    "ServerCreate",
    "ServerUpdate",
    "SubnetCreate",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_SPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters (U+0000-U+001F, U+007F) are not allowed")
    return value


def _text(value: str) -> str:
    if _CONTROL_BUT_SPACE.search(value):
        raise ValueError("control characters other than tab, CR and LF are not allowed")
    return value


Line = Annotated[str, AfterValidator(_no_control)]
Text = Annotated[str, AfterValidator(_text)]
Name = Annotated[Line, StringConstraints(max_length=255)]
RequiredName = Annotated[Line, StringConstraints(min_length=1, max_length=255)]
Id = Annotated[Line, StringConstraints(min_length=1, max_length=255)]
Address = Annotated[Line, StringConstraints(min_length=1, max_length=64)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_Spec):
    name: RequiredName


class KeypairCreate(_Spec):
    name: RequiredName
    project_id: Id | None = None
    public_key: Annotated[Text, StringConstraints(max_length=16384)] | None = None


class NetworkCreate(_Spec):
    name: Name = ""
    project_id: Id | None = None
    mtu: int = Field(1500, ge=68, le=9216)


class PoolSpec(_Spec):
    start: Address
    end: Address


class HostRouteSpec(_Spec):
    destination: Address
    nexthop: Address


# Neutron's values of ``ipv6_address_mode`` and ``ipv6_ra_mode`` (neutron-lib constants).
Ipv6Mode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]


class SubnetCreate(_Spec):
    """``gateway_ip`` absent: the first address; ``null``: no gateway."""

    network_id: Id
    cidr: Address
    name: Name = ""
    project_id: Id | None = None
    ip_version: Literal[4, 6] | None = None
    gateway_ip: Address | None = None
    allocation_pools: list[PoolSpec] | None = Field(None, max_length=64)
    dns_nameservers: list[Address] = Field(default_factory=list, max_length=16)
    host_routes: list[HostRouteSpec] = Field(default_factory=list, max_length=64)
    enable_dhcp: bool = True
    ipv6_address_mode: Ipv6Mode | None = None
    ipv6_ra_mode: Ipv6Mode | None = None


class FixedIPSpec(_Spec):
    subnet_id: Id | None = None
    ip_address: Address | None = None


class PortCreate(_Spec):
    network_id: Id
    name: Name = ""
    project_id: Id | None = None
    mac_address: Address | None = None
    fixed_ips: list[FixedIPSpec] | None = Field(None, max_length=16)
    device_owner: Name = ""
    device_id: Name = ""


class RouterCreate(_Spec):
    name: Name = ""
    project_id: Id | None = None


AgentType = Literal["DHCP agent", "L3 agent", "Metadata agent"]


class AgentReport(_Spec):
    """An agent's state report (Neutron's ``report_state``): who it is and how it is set up.

    ``POST /v1/agents`` registers (or re-registers after a restart) by (agent_type, host);
    ``PUT /v1/agents/{id}`` is the heartbeat and may leave the identity out."""

    agent_type: AgentType | None = None
    host: RequiredName | None = None
    configurations: dict[str, Annotated[Text, StringConstraints(max_length=4096)] | int | bool] = (
        Field(default_factory=dict, max_length=64)
    )


class RouterInterfaceSpec(_Spec):
    subnet_id: Id


class NetworkRequest(_Spec):
    network_id: Id
    fixed_ip: Address | None = None


# AWS's ``InstanceMetadataTags``: may the instance read its tags under meta-data/tags/instance?
MetadataTagsOption = Literal["enabled", "disabled"]


class ServerCreate(_Spec):
    name: RequiredName
    hostname: RequiredName | None = None
    project_id: Id | None = None
    availability_zone: Name | None = None
    flavor: RequiredName = "m1.small"
    image_id: Name | None = None
    key_name: Name | None = None
    # Base64 text; the length bound (Nova's 65535) is checked with a clearer message in rules.
    user_data: Line | None = None
    metadata: dict[Line, Text] = Field(default_factory=dict)
    tags: list[Line] = Field(default_factory=list)
    launch_index: int = Field(0, ge=0, le=65535)
    # Nova's ``config_drive``: attach a config drive at boot (also forced by force_config_drive).
    config_drive: bool = False
    networks: list[NetworkRequest] = Field(default_factory=list, max_length=16)
    instance_metadata_tags: MetadataTagsOption = "disabled"


class ServerUpdate(_Spec):
    """``PATCH /v1/servers/{id}``: what ``openstack server set|unset`` changes.

    ``metadata`` is a JSON merge patch (RFC 7396): a key set to null is removed, others are set.
    Tags are added and removed by name (``remove_tags`` first); the result obeys create's rules.
    """

    metadata: dict[Line, Text | None] = Field(default_factory=dict)
    add_tags: list[Line] = Field(default_factory=list)
    remove_tags: list[Line] = Field(default_factory=list)
    instance_metadata_tags: MetadataTagsOption | None = None
