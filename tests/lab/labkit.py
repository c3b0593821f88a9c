"""Helpers of the lab's root tests: the CLI in a child process, the checks that a lab left
nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from cloudmeta.config import Config
from cloudmeta.lab.childenv import config_env
from cloudmeta.linux import list_namespaces

CLI = [sys.executable, "-c", "from cloudmeta.cli.main import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(config: Config, *args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **config_env(config)}
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


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
