"""``MetadataProxyManager``: the one API the DHCP and L3 agents use, whatever the mode.

* ``inline`` needs the metadata agent in the SAME process: the manager is given the agent's
  :class:`~cloudmeta.proxy.inline.InlineListeners` (``cloudmeta.agent.embedded`` builds both).
  In ``cloudmeta all-in-one`` the DHCP and L3 agents share the one agent; a DHCP or L3 agent
  run as its own process with ``metadata_proxy_mode = inline`` embeds its own metadata agent
  (no unix socket), which is cheap: one admin API session and one API pool per process.
* ``process`` and ``haproxy`` start one child per namespace inside it, with a pid file, that
  forwards to the agent's unix socket; they work with the agent in any process. Each child is
  registered with the ``monitor`` given here, which alone decides what a death means
  (``check_child_processes_action``: respawn, or exit); nothing else respawns them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.config import Config, ProxyMode
from cloudmeta.http import Limits
from cloudmeta.linux.process import ProcessManager, ProcessMonitor
from cloudmeta.logs import get_logger
from cloudmeta.proxy.binds import METADATA_V6_IP, Bind
from cloudmeta.proxy.errors import ProxyError
from cloudmeta.proxy.haproxy import HaproxyTimeouts, config_dir, render_config, same_config
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.inline import InlineListeners
from cloudmeta.proxy.process import limit_argv
from cloudmeta.proxy.title import target_marker

__all__ = ["MetadataProxyManager"]

STOP_TIMEOUT = 5.0
SERVICE = "metadata-proxy"

log = get_logger("proxy")


@dataclass(slots=True)
class _Child:
    target: ProxyTarget
    binds: tuple[Bind, ...]
    process: ProcessManager
    conf: Path | None


class MetadataProxyManager:
    """``ensure(namespace, network_id=|router_id=, bind=(addr, port))`` / ``remove(namespace)``."""

    def __init__(
        self,
        config: Config,
        monitor: ProcessMonitor | None = None,
        *,
        inline: InlineListeners | None = None,
    ) -> None:
        self._config = config
        self._monitor = monitor
        self.mode = config.metadata_proxy_mode
        if self.mode is ProxyMode.INLINE and inline is None:
            raise ProxyError(
                "metadata_proxy_mode = inline needs the metadata agent in this process: build "
                "the manager with cloudmeta.agent.start_embedded(...) (all-in-one does), or set "
                "metadata_proxy_mode = process or haproxy to use a separate `cloudmeta agent`"
            )
        self._inline = inline
        self._children: dict[str, _Child] = {}

    async def ensure(
        self,
        namespace: str,
        *,
        network_id: str | None = None,
        router_id: str | None = None,
        bind: tuple[str, int] = ("169.254.169.254", 80),
        ipv6_interface: str | None = None,
        ipv6_any: bool = False,
    ) -> None:
        """Serve metadata in ``namespace`` for one network or router; idempotent. With
        ``ipv6_interface`` also on ``[fe80::a9fe:a9fe%<interface>]:<port>`` (the DHCP port),
        with ``ipv6_any`` also on ``[::]:<port>`` (a router's redirected requests)."""
        try:
            target = ProxyTarget(network_id=network_id, router_id=router_id)
        except ValueError as exc:
            raise ProxyError(f"ensure({namespace}): {exc}") from exc
        binds = [Bind(bind[0], bind[1])]
        if ipv6_interface:
            binds.append(Bind(METADATA_V6_IP, bind[1], ipv6_interface))
        if ipv6_any:
            binds.append(Bind("::", bind[1]))
        if self._inline is not None and self.mode is ProxyMode.INLINE:
            await self._inline.ensure(namespace, target, binds)
            return
        await self._ensure_child(namespace, target, tuple(binds))

    async def remove(self, namespace: str) -> None:
        """Stop serving metadata in ``namespace`` (no error if it was not served)."""
        if self._inline is not None:
            await self._inline.remove(namespace)
        child = self._children.pop(namespace, None)
        if child is not None:
            if self._monitor is not None:
                self._monitor.unregister(SERVICE, child.process.uuid)
            await child.process.stop(timeout=STOP_TIMEOUT)
            if child.conf is not None:
                child.conf.unlink(missing_ok=True)
            log.info("metadata proxy stopped", namespace=namespace, mode=self.mode.value)

    async def close(self) -> None:
        """Stop every child this manager started (the agents call it on shutdown)."""
        for namespace in list(self._children):
            await self.remove(namespace)

    def pids(self) -> dict[str, int]:
        """Child pid per namespace (process/haproxy modes), e.g. for memory accounting."""
        return {ns: c.process.pid for ns, c in self._children.items() if c.process.pid}

    async def _ensure_child(
        self, namespace: str, target: ProxyTarget, binds: tuple[Bind, ...]
    ) -> None:
        pid_dir = self._config.state_path / "external" / "pids"
        pid_file = pid_dir / SERVICE / f"{target.uuid}.pid"
        argv, conf, text = self._command(target, binds, pid_file)
        current = self._children.get(namespace)
        if current is not None and current.process.is_active():
            unchanged = current.target == target and current.binds == binds
            if unchanged and (conf is None or same_config(_read(conf), text)):
                return
        if current is not None:
            await self.remove(namespace)
        if conf is not None:
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(text)
        # A process-mode child retitles itself ns-metadata-proxy, keeping its options.
        marker = target.uuid if conf is not None else target_marker(target)
        process = ProcessManager(
            target.uuid, argv, pid_dir=pid_dir, namespace=namespace, service=SERVICE, marker=marker
        )
        pid = process.enable()
        if self._monitor is not None:
            self._monitor.register(process)
        self._children[namespace] = _Child(target, binds, process, conf)
        log.info(
            "metadata proxy started",
            namespace=namespace,
            mode=self.mode.value,
            target=target.uuid,
            pid=pid,
        )

    def _command(
        self, target: ProxyTarget, binds: tuple[Bind, ...], pidfile: Path
    ) -> tuple[list[str], Path | None, str]:
        socket_path = self._config.proxy_socket_path
        if self.mode is ProxyMode.HAPROXY:
            directory = config_dir(self._config.state_path)
            conf = directory / f"{target.uuid}.conf"
            timeouts = HaproxyTimeouts(
                http_keep_alive=self._config.metadata_proxy_keepalive_timeout
            )
            text = render_config(
                target,
                binds,
                socket_path,
                pidfile,
                debug=self._config.debug,
                timeouts=timeouts,
                rate_limit=self._config.metadata_rate_limiting,
            )
            # -db: stay in the foreground so the supervisor's pid is haproxy's own.
            return ["haproxy", "-db", "-f", str(conf)], conf, text
        which = (
            ("--network_id", target.network_id)
            if target.network_id
            else ("--router_id", str(target.router_id))
        )
        argv = [sys.executable, "-m", "cloudmeta.proxy", *which]
        for bind in binds:
            argv += ["--bind", str(bind)]
        argv += ["--metadata_proxy_socket", str(socket_path)]
        argv += limit_argv(Limits.from_config(self._config))
        return argv, None, ""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
