"""What the lab made, on disk, so that ``lab down`` can undo it even after a crash.

Every record is written *before* the thing it names is created, so a lab that dies half-way
leaves a file that lists at least everything it made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from cloudmeta.config import Config

__all__ = ["LabInstance", "LabNetwork", "LabState", "lab_dir", "load_state", "save_state"]


class LabNetwork(BaseModel):
    id: str
    name: str
    cidr: str
    owned: bool = True  # made by the lab (deleted by `lab down`), not a network made with the CLI
    subnet_id: str | None = None
    repo_port_id: str | None = None
    repo_ip: str | None = None
    repo_namespace: str | None = None
    repo_link: str | None = None
    repo_pid: int | None = None


class LabInstance(BaseModel):
    name: str
    server_id: str
    network_id: str
    network: str
    namespace: str
    link: str
    port_id: str | None = None
    ip: str | None = None
    mac: str | None = None
    datasource: str = "OpenStack"
    vm: bool = False  # a QEMU guest on a tap (``link``), not a namespace (``namespace`` is "")


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


def lab_dir(config: Config) -> Path:
    return config.state_path / "lab"


def _file(config: Config) -> Path:
    return lab_dir(config) / "lab.json"


def load_state(config: Config) -> LabState | None:
    try:
        return LabState.model_validate(json.loads(_file(config).read_text()))
    except FileNotFoundError:
        return None
    except ValueError:
        return LabState()


def save_state(config: Config, state: LabState) -> None:
    path = _file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)
