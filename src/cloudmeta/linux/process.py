"""Long-lived processes in namespaces (Neutron's external_process): pid files and a respawn monitor.

A process is started in its own session so it survives an agent restart; the next agent finds it
through its pid file and checks that the pid's command line still contains the marker (the
network or router uuid), so a recycled pid is never taken for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import structlog

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import spawn
from cloudmeta.metrics import PROCESS_RESPAWNS, PROCESS_STARTS

__all__ = ["ProcessManager", "ProcessMonitor", "cmdline", "pid_alive", "read_pid", "stop_pid"]

_log = structlog.get_logger().bind(component="linux")


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces (empty when it is gone)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def stop_pid(
    pid: int,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
    reap: Callable[[], object] | None = None,
) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns when the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not pid_alive(pid):
                return
            await asyncio.sleep(0.02)
    raise LinuxError(f"process {pid} survived SIGKILL")


class ProcessManager:
    """One process: ``cmd`` run in ``namespace``, pid in ``<pid_dir>/<service>/<uuid>.pid``."""

    def __init__(
        self,
        uuid: str,
        cmd: Sequence[str],
        *,
        pid_dir: Path,
        namespace: str | None = None,
        service: str = "process",
        marker: str | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.uuid = uuid
        self.service = service
        self.cmd = list(cmd)
        self.namespace = namespace
        self.marker = marker or uuid
        self.pid_file = pid_dir / service / f"{uuid}.pid"
        self.log_path = log_path
        self.env = env
        self._child: subprocess.Popen[bytes] | None = None
        if self.marker not in " ".join(self.cmd):
            raise LinuxError(
                f"{service} {uuid}: the command must contain the marker {self.marker!r} "
                "(so a recycled pid is not mistaken for it)"
            )

    def __repr__(self) -> str:
        return f"ProcessManager({self.service} {self.uuid} pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def _reap(self) -> None:
        if self._child is not None and self._child.poll() is not None:
            self._child = None

    def is_active(self) -> bool:
        """The pid file's process is alive and its command line contains the marker.

        Our own running child counts without the marker check: while it is still exec'ing,
        ``/proc/<pid>/cmdline`` can read empty, and it must not look dead (and be spawned twice).
        """
        self._reap()
        pid = self.pid
        if pid is None or not pid_alive(pid):
            return False
        if self._child is not None and self._child.pid == pid:
            return True
        return self.marker in cmdline(pid)

    def enable(self) -> int:
        """Start the process unless it is already active; return its pid."""
        if self.is_active():
            return self.pid or 0
        self._child = spawn(
            self.cmd, namespace=self.namespace, log_path=self.log_path, env=self.env
        )
        PROCESS_STARTS.labels(self.service).inc()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{self._child.pid}\n")
        tmp.replace(self.pid_file)
        return self._child.pid

    def reload(self) -> None:
        """SIGHUP (dnsmasq rereads its hosts and opts files)."""
        pid = self.pid
        if pid is None or not self.is_active():
            raise LinuxError(f"{self.service} {self.uuid} is not running; cannot reload it")
        os.kill(pid, signal.SIGHUP)

    async def stop(self, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """SIGTERM, wait ``timeout`` s, SIGKILL; remove the pid file (idempotent)."""
        pid = self.pid
        if pid is not None and self.is_active():
            await stop_pid(pid, timeout=timeout, reap=self._reap)
        self._reap()
        self.pid_file.unlink(missing_ok=True)


RespawnCallback = Callable[[ProcessManager], object]


class ProcessMonitor:
    """Checks registered processes every ``interval`` s; respawns a dead one, or exits the agent.

    With ``action="exit"`` the ``on_exit`` callback runs (default: SIGTERM to our own process,
    as Neutron does), so the agent shuts down and its supervisor restarts it.
    """

    def __init__(
        self,
        *,
        interval: float = 1.0,
        action: Literal["respawn", "exit"] = "respawn",
        on_exit: Callable[[ProcessManager], object] | None = None,
    ) -> None:
        self.interval = interval
        self.action = action
        self.on_exit = on_exit
        self._managers: dict[tuple[str, str], tuple[ProcessManager, RespawnCallback | None]] = {}
        self._task: asyncio.Task[None] | None = None

    def register(
        self, manager: ProcessManager, *, on_respawn: RespawnCallback | None = None
    ) -> None:
        self._managers[(manager.service, manager.uuid)] = (manager, on_respawn)

    def unregister(self, service: str, uuid: str) -> None:
        self._managers.pop((service, uuid), None)

    def managers(self) -> list[ProcessManager]:
        return [manager for manager, _ in self._managers.values()]

    def check_once(self) -> list[ProcessManager]:
        """One pass: respawn (or exit for) every dead process; return those respawned."""
        respawned: list[ProcessManager] = []
        for manager, on_respawn in list(self._managers.values()):
            if manager.is_active():
                continue
            if self.action == "exit":
                _log.error(
                    "child process died, exiting", service=manager.service, uuid=manager.uuid
                )
                (self.on_exit or (lambda _m: os.kill(os.getpid(), signal.SIGTERM)))(manager)
                return respawned
            _log.warning(
                "respawning dead child process", service=manager.service, uuid=manager.uuid
            )
            try:
                pid = manager.enable()
            except LinuxError as exc:
                _log.error(
                    "respawn failed", service=manager.service, uuid=manager.uuid, error=str(exc)
                )
                continue
            _log.info(
                "child process respawned", service=manager.service, uuid=manager.uuid, pid=pid
            )
            respawned.append(manager)
            PROCESS_RESPAWNS.labels(manager.service).inc()
            if on_respawn is not None:
                on_respawn(manager)
        return respawned

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check_once()
            except Exception:  # one bad pass must not end monitoring
                _log.exception("process monitor pass failed")

    def start(self) -> None:
        """Start checking in the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="process-monitor"
            )

    async def close(self) -> None:
        """Stop checking; the processes keep running."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
