"""Helpers of the lab's root tests: the CLI in a child process, the checks that a lab left
nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from cloudmeta.config import Config
from cloudmeta.linux import list_namespaces
from support.cli import CLI, cli, free_port

__all__ = ["CLI", "assert_nothing_left", "cli", "free_port", "processes_of"]


def processes_of(state_path: Path) -> list[str]:
    """Command lines that name a file under ``state_path`` (dnsmasq, repo servers, ...)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(state_path) in cmd:
                found.append(cmd)
    return found


def assert_nothing_left(config: Config) -> None:
    assert list_namespaces(config.namespace_prefix) == []
    assert [n for n in os.listdir("/sys/class/net") if n.startswith(config.device_prefix)] == []
    assert not (config.state_path / "lab").exists()
    assert list((config.state_path / "dhcp").glob("*")) == []  # the agents' files of the lab
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(config.state_path) not in mounts
    for cmd in processes_of(config.state_path):
        assert str(config.state_path / "lab") not in cmd, cmd
