"""ProcessManager and ProcessMonitor with real processes in a real namespace."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from linux_scratch import Scratch

from cloudmeta import linux
from cloudmeta.linux.process import cmdline as process_cmdline

pytestmark = pytest.mark.root


def _loop_cmd(marker: str) -> list[str]:
    # the marker is $0 of the shell, so it stays in /proc/<pid>/cmdline
    return ["sh", "-c", "trap 'echo hup' HUP; echo ready; while :; do sleep 0.2; done", marker]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone between the listing and the read
    return int(stat.rpartition(")")[2].split()[1])


def _contains(path: Path, what: bytes) -> bool:
    return path.exists() and what in path.read_bytes()


async def _wait_for(what: bytes, path: Path) -> None:
    for _ in range(100):
        if _contains(path, what):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what!r} never appeared in {path}")


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


async def test_manager_pid_file_marker_reload_and_stop(scratch: Scratch) -> None:
    ns = scratch.namespace("p")
    uuid = f"{scratch.tag}-uuid"
    log = scratch.pid_dir / "out.log"
    scratch.pid_dir.mkdir()
    manager = linux.ProcessManager(
        uuid, _loop_cmd(uuid), pid_dir=scratch.pid_dir, namespace=ns, service="cmt", log_path=log
    )
    pid = manager.enable()
    assert manager.enable() == pid  # already active: not started twice
    assert manager.pid_file.read_text() == f"{pid}\n"
    # `ip netns exec` enters the namespace, then execs the command: wait for both. The
    # shell's `sleep` children are in the namespace too, so the pid is one of its pids.
    await _until(lambda: pid in linux.namespace_pids(ns) and uuid in process_cmdline(pid))
    # every process in the namespace is the shell or a child of it
    assert all(p == pid or _parent(p) in (pid, None) for p in linux.namespace_pids(ns))
    # a fresh manager (an agent restart) recognises the running process by pid file + marker
    again = linux.ProcessManager(uuid, _loop_cmd(uuid), pid_dir=scratch.pid_dir, service="cmt")
    await _until(again.is_active)
    # a pid file naming a process without the marker (a recycled pid) is not taken for it
    other = linux.ProcessManager(
        "cmt-other", _loop_cmd("cmt-other"), pid_dir=scratch.pid_dir, service="cmt"
    )
    other.pid_file.write_text(f"{pid}\n")
    assert not other.is_active()
    other.pid_file.unlink()

    await _wait_for(b"ready", log)  # the trap is set: SIGHUP now reaches it
    manager.reload()
    await _wait_for(b"hup", log)
    await manager.stop(timeout=2)
    assert not manager.is_active() and not manager.pid_file.exists()
    await manager.stop()
    with pytest.raises(linux.LinuxError, match="not running"):
        manager.reload()
    with pytest.raises(linux.LinuxError, match="marker"):
        linux.ProcessManager("cmt-x", ["sleep", "100"], pid_dir=scratch.pid_dir)


async def test_monitor_respawns_after_kill_9(scratch: Scratch) -> None:
    ns = scratch.namespace("m")
    uuid = f"{scratch.tag}-mon"
    manager = linux.ProcessManager(uuid, _loop_cmd(uuid), pid_dir=scratch.pid_dir, namespace=ns)
    respawned: list[int] = []
    monitor = linux.ProcessMonitor(interval=0.2)
    monitor.register(manager, on_respawn=lambda m: respawned.append(m.pid or 0))
    first = manager.enable()
    monitor.start()
    try:
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        while not respawned and time.monotonic() - killed < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        took = time.monotonic() - killed
        print(f"\nrespawned {took:.2f} s after kill -9")
        assert respawned and respawned[0] != first and manager.is_active()
        assert took < 5
    finally:
        await monitor.close()
    assert manager.is_active()  # closing the monitor leaves the process running


async def test_monitor_exit_action_calls_back(scratch: Scratch) -> None:
    uuid = f"{scratch.tag}-exit"
    manager = linux.ProcessManager(uuid, _loop_cmd(uuid), pid_dir=scratch.pid_dir)
    exits: list[str] = []
    monitor = linux.ProcessMonitor(
        interval=0.1, action="exit", on_exit=lambda m: exits.append(m.uuid)
    )
    monitor.register(manager)
    pid = manager.enable()
    assert monitor.check_once() == [] and exits == []
    await linux.stop_pid(pid)
    monitor.check_once()
    assert exits == [uuid] and not manager.is_active()


async def test_cleanup_kills_pid_file_processes_and_namespace_processes(scratch: Scratch) -> None:
    ns = scratch.namespace("c")
    uuid = f"{scratch.tag}-c"
    by_file = linux.ProcessManager(uuid, _loop_cmd(uuid), pid_dir=scratch.pid_dir).enable()
    in_ns = linux.spawn(["sh", "-c", "while :; do sleep 0.2; done"], namespace=ns)
    # Until `ip netns exec` has entered the namespace, nothing there is ours to find.
    await _until(lambda: in_ns.pid in linux.namespace_pids(ns))
    await linux.cleanup(namespaces=[ns], pid_dir=scratch.pid_dir)
    in_ns.wait(timeout=5)
    assert not linux.pid_alive(by_file)
    assert not linux.namespace_exists(ns)


async def test_namespace_pids_of_several_namespaces_in_one_pass(scratch: Scratch) -> None:
    """A boot storm's cleanup names 1 000 namespaces: one call finds the processes of each."""
    first, second, third = (scratch.namespace(f"pf2{n}") for n in "abc")
    procs = [linux.spawn(_loop_cmd(f"{scratch.tag}-pf2{n}"), namespace=ns)
             for n, ns in (("a", first), ("b", second))]  # fmt: skip
    try:
        pids = {p.pid for p in procs}
        await _until(lambda: pids <= set(linux.namespace_pids(first, second)))
        assert procs[0].pid in linux.namespace_pids(first)
        assert procs[1].pid not in linux.namespace_pids(first)
        assert not set(linux.namespace_pids(third)) & pids
        assert linux.namespace_pids(f"{scratch.tag}-missing") == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
