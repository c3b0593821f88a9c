"""The lab's services (the all-in-one, or a multi-node lab's API hosts and node agents),
started and kept running as systemd's ``Restart=on-failure`` would.

A crash (``kill -9``, an exit status other than 0) is followed by a new all-in-one after
:data:`RESTART_DELAY`; on start-up it adopts what the old one left (namespaces, dnsmasq, the
proxies) and re-opens the inline listeners. A clean stop (exit 0, SIGTERM, SIGINT: somebody
meant it, e.g. ``lab down``) ends the supervision, as do :data:`BURST` crashes within
:data:`BURST_WINDOW` seconds (systemd's start limit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.lab.childenv import config_env
from cloudmeta.lab.state import LabState, edit_state, lab_dir

__all__ = [
    "RESTART_DELAY",
    "all_in_one_log",
    "all_in_one_pid_file",
    "spawn_all_in_one",
    "spawn_cloudmeta",
    "supervise",
    "supervise_all_in_one",
]

RESTART_DELAY = 0.5
BURST = 5
BURST_WINDOW = 60.0
_CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)


def spawn_cloudmeta(config: Config, command: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``cloudmeta COMMAND`` on ``config`` (passed as CLOUDMETA_* variables), its output
    appended to ``log``."""
    exe = Path(sys.executable).with_name("cloudmeta")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "cloudmeta.cli.main"]
    env = {**os.environ, **config_env(config)}
    log.parent.mkdir(parents=True, exist_ok=True)
    return linux.spawn([*argv, command], log_path=log, env=env)


def spawn_all_in_one(config: Config, state: LabState) -> subprocess.Popen[bytes]:
    """Start ``cloudmeta all-in-one`` (log and pid file in the lab dir) and record its pid."""
    proc = spawn_cloudmeta(config, "all-in-one", all_in_one_log(config))
    with edit_state(config, state) as record:
        record.all_in_one_pid = proc.pid
    all_in_one_pid_file(config).write_text(f"{proc.pid}\n")
    return proc


def all_in_one_log(config: Config) -> Path:
    return lab_dir(config) / "all-in-one.log"


def all_in_one_pid_file(config: Config) -> Path:
    """Written when the lab starts its all-in-one; it stays until ``lab down`` is done."""
    return lab_dir(config) / "all-in-one.pid"


async def _exit_status(proc: subprocess.Popen[bytes]) -> int:
    """Wait (through a pidfd, no polling) for ``proc`` to end; its return code."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return proc.wait()
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


async def supervise_all_in_one(
    config: Config,
    state: LabState,
    proc: subprocess.Popen[bytes],
    ready: Callable[[subprocess.Popen[bytes]], Awaitable[None]],
    say: Callable[[str], None],
) -> None:
    """Until cancelled: restart ``proc`` whenever it crashes; ``ready`` waits for a new one."""
    await supervise("all-in-one", proc, lambda: spawn_all_in_one(config, state), ready, say)


async def supervise(
    name: str,
    proc: subprocess.Popen[bytes],
    respawn: Callable[[], subprocess.Popen[bytes]],
    ready: Callable[[subprocess.Popen[bytes]], Awaitable[None]],
    say: Callable[[str], None],
    wanted: Callable[[], bool] = lambda: True,
) -> None:
    """Until cancelled: ``respawn`` service ``name`` whenever it crashes, unless ``wanted``
    says no more (its node was killed on purpose); ``ready`` waits for a new one."""
    crashes: list[float] = []
    while True:
        status = await _exit_status(proc)
        if status in _CLEAN:
            say(f"services: {name} stopped (status {status}); not restarting it")
            return
        if not wanted():
            say(f"services: {name} died (status {status}) with its node; not restarting it")
            return
        now = time.monotonic()
        crashes = [t for t in crashes if now - t < BURST_WINDOW] + [now]
        if len(crashes) > BURST:
            say(f"services: {name} crashed {BURST} times in {BURST_WINDOW:.0f} s; giving up")
            return
        say(f"services: {name} died (status {status}); restarting it")
        await asyncio.sleep(RESTART_DELAY)
        proc = respawn()
        say(f"services: restarted cloudmeta {name} (pid {proc.pid})")
        await ready(proc)
