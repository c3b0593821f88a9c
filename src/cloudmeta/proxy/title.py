"""The process title of a process-mode proxy: ``ns-metadata-proxy --network_id <id> ...``.

Operators (and the seed's reader) find a network's proxy with ``ps`` by Neutron's name and its
``--network_id``; started as ``python -m cloudmeta.proxy`` it would show the interpreter
instead. The title keeps every argument, so the target's marker stays in
``/proc/<pid>/cmdline`` for the pid-file check and the cleanup sweep.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import setproctitle

from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.headers import ProxyTarget

__all__ = ["PROCESS_NAME", "proxy_args", "set_process_title", "target_marker", "title_of"]

PROCESS_NAME = "ns-metadata-proxy"


def target_marker(target: ProxyTarget) -> str:
    """``--network_id <id>`` or ``--router_id <id>``: what names this target's process.

    It reads the same in the command line the manager starts and in the title the process
    then sets (``/proc/<pid>/cmdline`` with NULs as spaces), and no dnsmasq or other process
    of the same network carries it.
    """
    option = "--network_id" if target.network_id is not None else "--router_id"
    return f"{option} {target.uuid}"


def proxy_args(
    target: ProxyTarget, binds: Sequence[Bind], socket_path: Path, *, debug: bool = False
) -> list[str]:
    """The proxy's options, as the manager passes them and the title shows them."""
    args = target_marker(target).split(" ")
    for bind in binds:
        args += ["--bind", str(bind)]
    args += ["--metadata_proxy_socket", str(socket_path)]
    return [*args, "--debug"] if debug else args


def title_of(args: Sequence[str]) -> str:
    return shlex.join([PROCESS_NAME, *args])


def set_process_title(args: Sequence[str]) -> None:
    """Show this process as ``ns-metadata-proxy <args>`` in ps (and /proc/<pid>/cmdline)."""
    setproctitle.setproctitle(title_of(args))
