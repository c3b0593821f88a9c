"""One typed configuration object, read from a TOML file and ``CLOUDMETA_*`` variables.

Option names are OpenStack's where one exists (Neutron's agent options at the top level, Nova's
``[api]`` and ``[database]`` groups as sections), so an operator's habits carry over. The object
is built once at start-up and passed down; nothing reads configuration from a global.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from cloudmeta.documents.configdrive import CONFIG_DRIVE_SKIP_VERSIONS

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "AdminSection",
    "ApiSection",
    "ChildAction",
    "Config",
    "ConfigError",
    "DatabaseSection",
    "IdentityMode",
    "MetadataRateLimitingSection",
    "ProxyMode",
    "TokenPolicy",
    "load_config",
]

DEFAULT_CONFIG_FILE = Path("/etc/cloudmeta/cloudmeta.toml")
ENV_PREFIX = "CLOUDMETA_"


# ``metadata_workers = auto``'s ceiling: the inline processes a host gets without asking.
AUTO_INLINE_WORKERS = 4
_AUTO = -1  # metadata_workers before resolution


class ConfigError(Exception):
    """The configuration file or an environment variable is not valid."""


class ProxyMode(StrEnum):
    INLINE = "inline"
    PROCESS = "process"
    HAPROXY = "haproxy"


class IdentityMode(StrEnum):
    SIGNED = "signed"
    SOURCE_IP = "source-ip"


class TokenPolicy(StrEnum):
    OPTIONAL = "optional"
    REQUIRED = "required"


class ChildAction(StrEnum):
    RESPAWN = "respawn"
    EXIT = "exit"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSection(_Section):
    """Nova's ``[database]``: empty means the SQLite file in ``state_path``."""

    connection: str = ""


class AdminSection(_Section):
    """Where the admin API (the stand-in for Nova's and Neutron's APIs) listens."""

    listen: str = "127.0.0.1"
    port: int = Field(8774, ge=1, le=65535)


class ApiSection(_Section):
    """Nova's ``[api]`` group plus its ``metadata_listen*`` options."""

    metadata_listen: str = "0.0.0.0"
    metadata_listen_port: int = Field(8775, ge=1, le=65535)
    # Processes serving the metadata API on its port (SO_REUSEPORT; cloudmeta.api.workers),
    # or "auto": one per core. 1 keeps all-in-one one process (bench/README.md: on 2 cores a
    # worker costs the all-in-one's chain CPU per request and gains nothing); 2 on a
    # dedicated 2-core API host (+45% req/s in the API bench, +100 MiB RSS).
    metadata_workers: int = Field(1, ge=1, le=64)
    metadata_cache_expiration: int = Field(15, ge=0)
    identity: IdentityMode = IdentityMode.SIGNED
    http_tokens: TokenPolicy = TokenPolicy.OPTIONAL
    dhcp_domain: str = "novalocal"
    vendordata_providers: list[str] = Field(default_factory=lambda: ["StaticJSON"])
    vendordata_jsonfile_path: Path | None = None
    vendordata_dynamic_targets: list[str] = Field(default_factory=list)
    # Nova's bounds: connect >= 3 s; read > 0 (Nova allows 0, which aiohttp reads as "no
    # timeout"). Each target's whole exchange is also capped at connect + read (vendordata.py).
    vendordata_dynamic_connect_timeout: float = Field(5.0, ge=3)
    vendordata_dynamic_read_timeout: float = Field(5.0, gt=0)
    # EC2 versions left off a config drive (Nova's default: all but 2009-04-04; latest stays).
    config_drive_skip_versions: list[str] = Field(
        default_factory=lambda: list(CONFIG_DRIVE_SKIP_VERSIONS)
    )

    @field_validator("metadata_workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: Any) -> Any:
        """``auto``: one metadata API process per core of this machine (at most 64)."""
        return _workers(value)


def _workers(value: Any) -> Any:
    """A process count: an int, or ``auto`` = one per core of this machine (at most 64)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return min(64, os.cpu_count() or 1)
    return value


IpVersion = Literal[4, 6]


def _ipv4_only() -> list[IpVersion]:
    return [4]


class MetadataRateLimitingSection(_Section):
    """Neutron's ``[metadata_rate_limiting]``, its names and defaults: two sliding windows per
    source address (one haproxy stick-table each in Neutron), a request refused with 429 when
    either window holds more than its limit. ``ip_versions`` are the families of the callers
    limited (Neutron allows one only, a limit of its haproxy tables; cloudmeta takes both)."""

    rate_limit_enabled: bool = False
    ip_versions: list[IpVersion] = Field(default_factory=_ipv4_only, min_length=1)
    base_window_duration: int = Field(10, ge=1)
    base_query_rate_limit: int = Field(10, ge=1)
    burst_window_duration: int = Field(10, ge=1)
    burst_query_rate_limit: int = Field(10, ge=1)

    @field_validator("ip_versions", mode="before")
    @classmethod
    def _versions(cls, value: Any) -> Any:
        """Neutron writes them ``4,6`` (a ListOpt of strings): take that, ``"4"`` and 4."""
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, list):
            value = [int(v) if isinstance(v, str) and v.isdigit() else v for v in value]
            return sorted(set(value), key=str)
        return value


# The old token-bucket options: 0 req/s was "no limit"; the burst default was 50.
_OLD_RATE, _OLD_BURST, _OLD_BURST_DEFAULT = "metadata_rate_limit", "metadata_rate_burst", 50


def _from_old_bucket(rate: float, burst: int) -> MetadataRateLimitingSection:
    """The windows that let through what the old bucket (``rate`` req/s, ``burst``) let
    through at most in the same time: ``burst + rate x window``, Neutron's 10 s base window and a
    1 s burst window; the old limit held for every caller, so both IP versions."""
    if rate <= 0:
        return MetadataRateLimitingSection()
    return MetadataRateLimitingSection(
        rate_limit_enabled=True,
        ip_versions=[4, 6],
        base_window_duration=10,
        base_query_rate_limit=burst + math.ceil(rate * 10),
        burst_window_duration=1,
        burst_query_rate_limit=burst + math.ceil(rate),
    )


class Config(BaseSettings):
    """Everything cloudmeta can be told; see ``cloudmeta config show``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    # Common (Neutron [DEFAULT])
    state_path: Path = Path("/var/lib/cloudmeta")
    # The name an agent reports itself under (Neutron's ``host``); one agent of each type
    # per host. The admin API keys DHCP ports and scheduling on it.
    host: str = Field(default_factory=socket.gethostname, min_length=1, max_length=255)
    debug: bool = False
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    # Where the CLI and the agents find the admin API, and its bearer token.
    admin_url: str = "http://127.0.0.1:8774"
    admin_token: SecretStr | None = None
    # Metadata agent (neutron-metadata-agent)
    metadata_proxy_shared_secret: SecretStr = SecretStr("")
    # One host, or a comma list of metadata API hosts ("host" or "host:port" each): the
    # agent uses one and moves to the next when it stops answering (cloudmeta.agent.forward).
    nova_metadata_host: str = Field("127.0.0.1", min_length=1)
    nova_metadata_port: int = Field(8775, ge=1, le=65535)
    nova_metadata_protocol: str = Field("http", pattern="^https?$")
    nova_metadata_timeout: float = Field(10.0, gt=0)
    metadata_proxy_socket: Path | None = None
    metadata_proxy_mode: ProxyMode = ProxyMode.INLINE
    metadata_port: int = Field(9697, ge=1, le=65535)
    # Processes serving the inline listeners (Neutron's metadata agent option). With N > 1 the
    # process of the embedded agent (all-in-one, a dhcp-agent or l3-agent in inline mode)
    # starts N-1 workers, each with its own agent, port cache and (in the all-in-one)
    # in-process metadata API, listening with SO_REUSEPORT in every served namespace
    # (cloudmeta.inline_workers); connection caps then hold per process. Default "auto": one
    # per core, at most AUTO_INLINE_WORKERS (a worker costs 50-86 MiB PSS, and a few already
    # answer more than a boot storm asks), and 1 when [metadata_rate_limiting] is enabled: its
    # windows are per process, so N processes would let an address through up to N times.
    # On a quiet 2-core host one process left a core 70% idle; two served 1.6x the req/s
    # (bench/README.md, "Every core"). 0 is Neutron's "no separate worker": one process.
    # Resolved at load: the field holds the process count.
    metadata_workers: int = Field(_AUTO, ge=_AUTO, le=64)
    # Deprecated (the token bucket before Neutron's options): mapped onto
    # [metadata_rate_limiting] when that section is not given; see `deprecations`.
    metadata_rate_limit: float | None = Field(None, ge=0)
    metadata_rate_burst: int | None = Field(None, ge=1)
    # Slow and abusive clients (haproxy: maxconn, timeout http-request, timeout
    # http-keep-alive). The caps bind the instance-facing listeners (0 = no cap); the two
    # timeouts bind every port cloudmeta listens on.
    metadata_proxy_max_connections: int = Field(1024, ge=0)
    metadata_proxy_max_connections_per_peer: int = Field(256, ge=0)
    metadata_proxy_header_timeout: float = Field(10.0, gt=0)
    metadata_proxy_keepalive_timeout: float = Field(30.0, gt=0)
    # Agents' heartbeats (Neutron's [AGENT] report_interval, [DEFAULT] agent_down_time): an
    # agent reports every report_interval s; the admin API counts it dead after
    # agent_down_time s without a report (Neutron: at least twice report_interval).
    report_interval: float = Field(30.0, gt=0)
    agent_down_time: float = Field(75.0, gt=0)
    # Scheduling (neutron-server): DHCP agents per network, one L3 agent per router; a dead
    # agent's networks and routers move to a live one. Neutron's
    # allow_automatic_l3agent_failover defaults to false; cloudmeta moves routers by default
    # (its routers are stateless namespaces, rebuilt in a second on the new agent).
    dhcp_agents_per_network: int = Field(1, ge=1)
    allow_automatic_dhcp_failover: bool = True
    allow_automatic_l3agent_failover: bool = True
    # Metadata answered on every compute node for its own instances (OVN's localport, Neutron's
    # distributed metadata data path): the metadata agent (`cloudmeta agent`) keeps a
    # `qmeta-<network>` namespace holding 169.254.169.254 on each local bridge; the DHCP agent
    # pushes 169.254.169.254/32 on-link instead of via its port (docs/multi-host.md).
    distributed_metadata: bool = False
    # DHCP agent (neutron-dhcp-agent)
    force_metadata: bool = False
    enable_isolated_metadata: bool = False
    dhcp_lease_duration: int = Field(86400, ge=-1)
    dnsmasq_dns_servers: list[str] = Field(default_factory=list)
    dns_domain: str = "openstacklocal"
    check_child_processes_interval: float = Field(1.0, ge=0)
    check_child_processes_action: ChildAction = ChildAction.RESPAWN
    # Names of everything the agents create get these prefixes (tests use "cmt-").
    namespace_prefix: str = ""
    device_prefix: str = ""
    # Namespace holding every network's bridge and the bridge end of every veth ("" = the host,
    # as Neutron's linuxbridge agent). Port security (MAC/IP anti-spoofing) needs one.
    bridge_namespace: str = ""
    # The lab's VM images (built once per machine, shared by every state dir; regenerable).
    image_cache_path: Path = Path("/var/cache/cloudmeta/images")
    # Compute (Nova [DEFAULT]): every server gets a config drive, asked for or not.
    force_config_drive: bool = False
    # Prometheus metrics (cloudmeta.metrics): `GET /metrics` on the admin API's port, and on
    # metrics_listen ("host:port", "" = off) for processes without an HTTP port (agent,
    # dhcp-agent, l3-agent). metrics_enabled = false drops the per-request hop counting
    # (the bench's baseline); the other metrics cost nothing per request.
    metrics_enabled: bool = True
    metrics_listen: str = Field("", pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):[0-9]{1,5}$")

    database: DatabaseSection = Field(default_factory=DatabaseSection)
    admin: AdminSection = Field(default_factory=AdminSection)
    api: ApiSection = Field(default_factory=ApiSection)
    metadata_rate_limiting: MetadataRateLimitingSection = Field(
        default_factory=MetadataRateLimitingSection
    )

    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @field_validator("metadata_workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: Any) -> Any:
        """``auto``: resolved by :meth:`_resolve_inline_workers` once the rate limiting
        section is known; 0 (Neutron: no separate worker) is one process."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return _AUTO
        if value in (0, "0"):
            return 1
        return value

    @model_validator(mode="after")
    def _map_old_rate_options(self) -> Config:
        """The old names keep working: mapped onto the new section unless it is given."""
        if self.metadata_rate_limit is None and self.metadata_rate_burst is None:
            return self

        old = ", ".join(
            f"{name}={value}"
            for name, value in (
                (_OLD_RATE, self.metadata_rate_limit),
                (_OLD_BURST, self.metadata_rate_burst),
            )
            if value is not None
        )
        if "metadata_rate_limiting" in self.model_fields_set:
            self._deprecations.append(
                f"{old} is deprecated and ignored: [metadata_rate_limiting] is set"
            )
            return self
        new = _from_old_bucket(
            self.metadata_rate_limit or 0.0, self.metadata_rate_burst or _OLD_BURST_DEFAULT
        )
        self.metadata_rate_limiting = new
        mapped = ", ".join(f"{k}={json.dumps(v)}" for k, v in new.model_dump(mode="json").items())
        self._deprecations.append(
            f"{old} is deprecated: use [metadata_rate_limiting]; mapped to {mapped}"
        )
        return self

    @model_validator(mode="after")
    def _resolve_inline_workers(self) -> Config:
        """``metadata_workers = auto``: one per core (at most AUTO_INLINE_WORKERS), or 1 when
        the per-process rate-limit windows must stay exact."""
        if self.metadata_workers == _AUTO:
            if self.metadata_rate_limiting.rate_limit_enabled:
                self.metadata_workers = 1
            else:
                self.metadata_workers = max(1, min(AUTO_INLINE_WORKERS, os.cpu_count() or 1))
        return self

    @property
    def deprecations(self) -> list[str]:
        """One line per deprecated option in use (logged at start, printed by config show)."""
        return list(self._deprecations)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init arguments; environment variables win over it.
        return (env_settings, init_settings)

    @property
    def proxy_socket_path(self) -> Path:
        return self.metadata_proxy_socket or self.state_path / "metadata_proxy"

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics_listen`` as (host, port); None when off."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def database_url(self) -> str:
        return self.database.connection or f"sqlite:///{self.state_path / 'cloudmeta.sqlite'}"

    @property
    def admin_token_file(self) -> Path:
        return self.state_path / "admin_token"

    @property
    def nova_metadata_url(self) -> str:
        """The first of :attr:`nova_metadata_urls`."""
        return self.nova_metadata_urls[0]

    @property
    def nova_metadata_urls(self) -> list[str]:
        """One base URL per entry of ``nova_metadata_host``, in the order given."""
        return [
            _metadata_url(self.nova_metadata_protocol, entry, self.nova_metadata_port)
            for entry in self.nova_metadata_host.split(",")
            if entry.strip()
        ]

    @field_validator("nova_metadata_host")
    @classmethod
    def _hosts(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",")]
        if not all(entries):
            raise ValueError(
                "a comma list of hosts without empty entries, e.g. 192.0.2.11,192.0.2.12"
            )
        return ",".join(entries)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced by ``***`` (the
        password of ``[database] connection`` too)."""
        data = self.model_dump(mode="json")
        for name in (_OLD_RATE, _OLD_BURST):
            if data[name] is None:
                del data[name]  # deprecated and unset: not part of the configuration
        data["database"]["connection"] = _mask_url(self.database.connection)
        return data


def _metadata_url(protocol: str, entry: str, default_port: int) -> str:
    """``host``, ``host:port``, ``v6`` or ``[v6]:port`` -> ``protocol://host:port``."""
    host, port = entry, default_port
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        host = inside
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif entry.count(":") == 1:
        name, _, number = entry.partition(":")
        if number.isdigit():
            host, port = name, int(number)
    if ":" in host:
        host = f"[{host}]"
    return f"{protocol}://{host}:{port}"


def _mask_url(url: str) -> str:
    """``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``, SQLAlchemy's own parse."""
    if not url:
        return url
    from sqlalchemy.engine import make_url  # imported here: only `config show` needs it
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "***"  # unparsable: show nothing that might be a password


def env_variable(loc: tuple[int | str, ...]) -> str:
    """The ``CLOUDMETA_*`` variable that sets the option at ``loc`` (``("api", "x")`` ->
    ``CLOUDMETA_API__X``)."""
    return ENV_PREFIX + "__".join(str(part) for part in loc[:2]).upper()


def _from_environment(loc: tuple[int | str, ...]) -> str | None:
    """The variable that set the option at ``loc``, if one is set (names are case-blind)."""
    wanted = env_variable(loc)
    return next((name for name in os.environ if name.upper() == wanted), None)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Read ``path`` (or the default file if it exists), then the environment."""
    data: dict[str, Any] = {}
    file = path if path is not None else DEFAULT_CONFIG_FILE
    read = path is not None or file.exists()
    if read:
        try:
            data = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Config(**data)
    except SettingsError as exc:  # only the environment source raises this (bad JSON)
        raise ConfigError(
            f"invalid {ENV_PREFIX}* environment variable: {exc} "
            '(list and section options take JSON, e.g. ["192.0.2.53"])'
        ) from exc
    except ValidationError as exc:
        problems = "; ".join(
            _problem(err["loc"], err["msg"], file if read else None, set(overrides))
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _problem(
    loc: tuple[int | str, ...], message: str, file: Path | None, overrides: set[str]
) -> str:
    """One validation error, naming where the value came from: the variable, the caller's
    overrides (command-line options) or the file."""
    origin = _from_environment(loc)
    if origin is None:
        from_file = file is not None and not (loc and loc[0] in overrides)
        origin = f"file {file}" if from_file else "command line"
    return f"{'.'.join(str(p) for p in loc)}: {message} (from {origin})"
