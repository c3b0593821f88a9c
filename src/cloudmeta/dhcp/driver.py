"""One network's dnsmasq (Neutron's ``Dnsmasq`` driver): its files and its watched process.

Reload and restart follow Neutron: port changes rewrite the files and SIGHUP (same pid, leases
kept); anything on the command line (subnets, MTU, own addresses) needs a restart.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.dhcp.model import NetworkBundle
from cloudmeta.dhcp.render import (
    DnsmasqFiles,
    DnsmasqSettings,
    addn_hosts_file,
    cmdline,
    hosts_file,
    opts_file,
)
from cloudmeta.linux.process import cmdline as process_cmdline
from cloudmeta.logs import get_logger
from cloudmeta.metrics import PROCESS_RESTARTS

__all__ = ["SERVICE", "DhcpError", "Dnsmasq", "dhcp_namespace", "pid_dir"]

SERVICE = "dnsmasq"
# dnsmasq writes its --pid-file only once its start-up checks (lease file, options) passed;
# a bad configuration makes it exit instead. Up to this long we wait for one or the other.
START_TIMEOUT = 15.0
_START_POLL = 0.02
_log = get_logger("dhcp")


class DhcpError(Exception):
    """The DHCP agent cannot serve a network; the message says which and what to check."""


def dhcp_namespace(config: Config, network_id: str) -> str:
    return f"{config.namespace_prefix}qdhcp-{network_id}"


def pid_dir(config: Config) -> Path:
    """Where watched processes keep their pid files (Neutron's ``external/pids``)."""
    return config.state_path / "external" / "pids"


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


class Dnsmasq:
    """The dnsmasq of one network: ``<state_path>/dhcp/<network_id>/`` and its process."""

    def __init__(self, config: Config, network_id: str, monitor: linux.ProcessMonitor) -> None:
        self.network_id = network_id
        self.namespace = dhcp_namespace(config, network_id)
        self.files = DnsmasqFiles(config.state_path / "dhcp" / network_id)
        self.settings = DnsmasqSettings.from_config(config)
        self._pid_dir = pid_dir(config)
        self._monitor = monitor
        self._process: linux.ProcessManager | None = None

    @property
    def pid(self) -> int | None:
        return self._manager([]).pid if self._process is None else self._process.pid

    def command(self, bundle: NetworkBundle, interface: str) -> list[str]:
        # In the foreground so the pid we watch is dnsmasq's; as root so it can reread its
        # files on SIGHUP however private state_path is.
        return [
            *cmdline(bundle, self.files, interface, self.settings),
            "--keep-in-foreground",
            "--user=root",
            "--group=root",
        ]

    def write_files(self, bundle: NetworkBundle, dhcp_ips: dict[str, str], interface: str) -> bool:
        """Rewrite host, addn_hosts, opts and interface; True if dnsmasq must reread them."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        if not self.files.leases.exists():
            self.files.leases.touch()
        _write_if_changed(self.files.interface, interface + "\n")
        changed = False
        for path, text in (
            (self.files.host, hosts_file(bundle, self.settings)),
            (self.files.addn_hosts, addn_hosts_file(bundle, self.settings)),
            (self.files.opts, opts_file(bundle, self.settings, dhcp_ips)),
        ):
            changed = _write_if_changed(path, text) or changed
        return changed

    def _manager(self, cmd: list[str]) -> linux.ProcessManager:
        return linux.ProcessManager(
            self.network_id,
            cmd or [str(self.files.root)],
            pid_dir=self._pid_dir,
            namespace=self.namespace,
            service=SERVICE,
            marker=str(self.files.root),
            log_path=self.files.root / "dnsmasq.log",
        )

    def running_command(self) -> str | None:
        """The command line of a live dnsmasq of this network (adopted after an agent restart)."""
        probe = self._manager([])
        pid = probe.pid
        if pid is None or not probe.is_active():
            return None
        return process_cmdline(pid).strip()

    async def ensure(self, cmd: list[str], *, restart: bool = False) -> str:
        """Run dnsmasq with ``cmd``: ``adopted`` (already so), ``started`` or ``restarted``."""
        running = self.running_command()
        wanted = " ".join(cmd)  # `ip netns exec` execs dnsmasq: /proc shows dnsmasq's argv
        outcome = "started"
        if running is not None:
            if running == wanted and not restart:
                self._watch(cmd)
                return "adopted"
            await self.stop()
            outcome = "restarted"
            PROCESS_RESTARTS.labels(SERVICE).inc()
        self._watch(cmd)
        assert self._process is not None
        try:
            self.files.pid.unlink(missing_ok=True)  # a stale one would read as "started"
            pid = self._process.enable()
            await self._started()
        except linux.LinuxError as exc:
            # The agent's retry with backoff owns it now, not the monitor's every-second respawn.
            self._monitor.unregister(SERVICE, self.network_id)
            raise DhcpError(
                f"cannot start dnsmasq for network {self.network_id} in {self.namespace}: {exc}"
            ) from exc
        _log.info(f"dnsmasq {outcome}", network_id=self.network_id, pid=pid)
        return outcome

    async def _started(self) -> None:
        """Return once dnsmasq wrote its pid file; raise if it exited first (or never did).

        Not a fixed sleep: on a loaded machine dnsmasq may take longer to fail than any
        guess, and a failure seen late would be taken for a running dnsmasq."""
        assert self._process is not None
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not self.files.pid.exists():
            if not self._process.is_active():
                raise linux.LinuxError(f"it exited: {self._log_tail()}")
            if asyncio.get_running_loop().time() > deadline:
                raise linux.LinuxError(f"it did not finish starting in {START_TIMEOUT:.0f} s")
            await asyncio.sleep(_START_POLL)
        if not self._process.is_active():
            raise linux.LinuxError(f"it exited: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = (self.files.root / "dnsmasq.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no output"

    def _watch(self, cmd: list[str]) -> None:
        self._process = self._manager(cmd)
        self._monitor.register(self._process, on_respawn=self._respawned)

    def _respawned(self, manager: linux.ProcessManager) -> None:
        _log.warning("dnsmasq respawned", network_id=self.network_id, pid=manager.pid)

    def reload(self) -> None:
        """SIGHUP: dnsmasq rereads hosts, addn_hosts and opts; pid and leases unchanged."""
        if self._process is None:
            raise DhcpError(f"dnsmasq of network {self.network_id} is not managed; cannot reload")
        try:
            self._process.reload()
        except linux.LinuxError as exc:
            raise DhcpError(f"cannot reload dnsmasq of network {self.network_id}: {exc}") from exc
        _log.info("dnsmasq reloaded", network_id=self.network_id, pid=self._process.pid)

    def is_active(self) -> bool:
        return self._process is not None and self._process.is_active()

    async def stop(self) -> None:
        """Stop watching, then SIGTERM (SIGKILL after 5 s); leases and files stay."""
        self._monitor.unregister(SERVICE, self.network_id)
        await (self._process or self._manager([])).stop()
        self._process = None

    def remove_files(self) -> None:
        shutil.rmtree(self.files.root, ignore_errors=True)
