"""Tear down what tests and the lab made: processes, links and namespaces, named explicitly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from cloudmeta.linux.ip import delete_link
from cloudmeta.linux.netns import NETNS_DIR, delete_namespace, namespace_exists
from cloudmeta.linux.process import cmdline, pid_alive, read_pid, stop_pid

__all__ = ["cleanup", "namespace_pids"]


def namespace_pids(*namespaces: str) -> list[int]:
    """Pids of the processes whose network namespace is one of ``namespaces`` (like ``ip netns
    pids``). One pass over /proc for all of them: a boot storm's cleanup names 1 000."""
    targets: set[tuple[int, int]] = set()
    for namespace in namespaces:
        try:
            st = os.stat(NETNS_DIR / namespace)
        except FileNotFoundError:
            continue
        targets.add((st.st_dev, st.st_ino))
    if not targets:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in targets:
                pids.append(int(entry))
    return pids


def _pid_file_processes(pid_dir: Path) -> list[int]:
    """Live pids from ``*.pid`` under ``pid_dir`` whose command line names that file or its stem."""
    pids: list[int] = []
    if not pid_dir.is_dir():
        return pids
    for pid_file in pid_dir.rglob("*.pid"):
        pid = read_pid(pid_file)
        if pid is None or pid == os.getpid() or not pid_alive(pid):
            continue
        line = cmdline(pid)
        if str(pid_file) in line or pid_file.stem in line:
            pids.append(pid)
    return pids


async def cleanup(
    *,
    namespaces: Iterable[str] = (),
    links: Iterable[str] = (),
    pid_dir: Path | None = None,
    timeout: float = 2.0,  # noqa: ASYNC109
    links_namespace: str | None = None,
) -> None:
    """Stop processes of ``pid_dir`` and inside ``namespaces``, then delete ``links`` (on the
    host, or in ``links_namespace``: the bridge namespace) and ``namespaces``. Idempotent; only
    what is named is touched."""
    namespaces = list(namespaces)
    pids = set(_pid_file_processes(pid_dir)) if pid_dir else set()
    pids.update(namespace_pids(*namespaces))
    pids.discard(os.getpid())
    await asyncio.gather(*(stop_pid(pid, timeout=timeout) for pid in pids))
    for link in links:
        if links_namespace is None or namespace_exists(links_namespace):
            await delete_link(links_namespace, link)
    for ns in namespaces:
        delete_namespace(ns)
