"""The ``cloudmeta`` command in a child process, as a user runs it, and a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from cloudmeta.config import Config
from cloudmeta.lab.childenv import config_env

CLI = [sys.executable, "-c", "from cloudmeta.cli.main import main; main()"]


def free_port() -> int:
    """A port free on 127.0.0.1 now (tests never use the fixed 8774/8775 of a running lab)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(config: Config, *args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    """Run ``cloudmeta ARGS`` with ``config`` passed as CLOUDMETA_* variables."""
    env = {**os.environ, **config_env(config)}
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
