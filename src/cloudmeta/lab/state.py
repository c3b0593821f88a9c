"""What the lab made, on disk, so that ``lab down`` can undo it even after a crash.

Every record is written *before* the thing it names is created, so a lab that dies half-way
leaves a file that lists at least everything it made. Several processes write it (``lab up``,
each ``lab boot``, ``lab kill``), so every change is a read-modify-write of the file under an
exclusive ``flock`` (:func:`edit_state`): a process never writes back its own old copy over
what another one recorded meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from cloudmeta.config import Config

__all__ = [
    "LabInstance",
    "LabNetwork",
    "LabNode",
    "LabState",
    "edit_state",
    "lab_dir",
    "load_state",
    "network_lock",
    "refresh",
    "save_state",
]


class LabNetwork(BaseModel):
    id: str
    name: str
    cidr: str
    owned: bool = True  # made by the lab (deleted by `lab down`), not a network made with the CLI
    subnet_id: str | None = None  # its first subnet (IPv4, or IPv6 on an IPv6-only network)
    subnet6_id: str | None = None  # its IPv6 subnet (`lab up --ipv6`)
    ipv6_mode: str | None = None  # that subnet's ipv6_address_mode
    ipv4: bool = True  # False: an IPv6-only network
    repo_port_id: str | None = None
    repo_ip: str | None = None
    repo_namespace: str | None = None
    repo_link: str | None = None
    repo_pid: int | None = None


class LabNode(BaseModel):
    """One host of a multi-node lab (the controller too): what it runs, where its traffic
    enters the underlay. ``dead`` after ``lab kill-node``: its services are not restarted."""

    name: str
    role: str  # "controller", "network", "compute"
    index: int = 0
    underlay_ip: str | None = None
    services: dict[str, int] = Field(default_factory=dict)  # service -> pid
    dead: bool = False


class LabInstance(BaseModel):
    name: str
    server_id: str
    network_id: str
    network: str
    namespace: str
    link: str
    port_id: str | None = None
    ip: str | None = None
    ip6: str | None = None  # its port's IPv6 address, if its network has IPv6
    mac: str | None = None
    datasource: str = "OpenStack"
    vm: bool = False  # a QEMU guest on a tap (``link``), not a namespace (``namespace`` is "")
    host: str | None = None  # its compute node in a multi-node lab


class LabState(BaseModel):
    owner_pid: int | None = None  # the `lab up` that made it; dead means a half-dead lab
    project_id: str | None = None
    keypair_id: str | None = None
    router_id: str | None = None
    all_in_one_pid: int | None = None
    networks: dict[str, LabNetwork] = Field(default_factory=dict)
    instances: dict[str, LabInstance] = Field(default_factory=dict)
    bridges: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    nodes: dict[str, LabNode] = Field(default_factory=dict)  # a multi-node lab's hosts
    database: str | None = None  # its private PostgreSQL database (dropped by `lab down`)
    localports: bool = False  # a multi-node lab's metadata on the compute nodes


def lab_dir(config: Config) -> Path:
    return config.state_path / "lab"


def _file(config: Config) -> Path:
    return lab_dir(config) / "lab.json"


@contextlib.contextmanager
def _locked(config: Config) -> Iterator[None]:
    """An exclusive lock on the lab's record, across processes (released if we die)."""
    lock = lab_dir(config) / "lab.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(config: Config) -> LabState | None:
    try:
        return LabState.model_validate(json.loads(_file(config).read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return LabState()  # unreadable: still a lab, whose debris `lab down` sweeps


def _write(config: Config, state: LabState) -> None:
    path = _file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


def load_state(config: Config) -> LabState | None:
    """The lab's record, or None when there is no lab here."""
    if not _file(config).exists():
        return None
    with _locked(config):
        return _read(config)


def save_state(config: Config, state: LabState) -> None:
    """Replace the whole record (a new lab); changes go through :func:`edit_state`."""
    with _locked(config):
        _write(config, state)


@contextlib.asynccontextmanager
async def network_lock(config: Config, network_id: str) -> AsyncIterator[None]:
    """One process at a time on one network's lab plumbing (its repository), across processes;
    waiting for it does not block the caller's event loop."""
    lock = lab_dir(config) / "locks" / network_id
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def edit_state(config: Config, state: LabState | None = None) -> Iterator[LabState]:
    """The current record, locked, to change in place; written back on exit.

    ``state``, the caller's copy, then becomes that record, so it also sees what other
    processes recorded (a ``lab boot`` beside ``lab up``).
    """
    with _locked(config):
        current = _read(config) or LabState()
        yield current
        _write(config, current)
    if state is not None:
        refresh(state, current)


def refresh(state: LabState, current: LabState) -> None:
    """Make ``state`` (in place) equal to ``current``."""
    for field in LabState.model_fields:
        setattr(state, field, getattr(current, field))
