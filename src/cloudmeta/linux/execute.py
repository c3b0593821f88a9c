"""Run a command on the host or inside a namespace: the one place that invokes ``ip netns exec``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.linux.errors import LinuxError

__all__ = ["CommandResult", "netns_command", "run", "spawn", "wait_exit"]


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def netns_command(cmd: Sequence[str], namespace: str | None) -> list[str]:
    """``cmd`` prefixed so it runs in ``namespace`` (``ip netns exec`` also remounts /sys)."""
    if not cmd:
        raise LinuxError("empty command")
    return ["ip", "netns", "exec", namespace, *cmd] if namespace else list(cmd)


async def run(
    cmd: Sequence[str],
    *,
    namespace: str | None = None,
    input: bytes | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 (kills the child, not just the wait)
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``cmd`` to completion; raise LinuxError (command + stderr) on failure or timeout."""
    argv = netns_command(cmd, namespace)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        raise LinuxError(f"cannot run {argv[0]}: {exc}", cmd=argv) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise LinuxError(
            f"command timed out after {timeout:g} s: {' '.join(argv)}", cmd=argv
        ) from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    result = CommandResult(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise LinuxError(
            f"command failed (exit {result.returncode}): {' '.join(argv)}: "
            f"{result.stderr.strip() or result.stdout.strip()}",
            cmd=argv,
            stderr=result.stderr,
            returncode=result.returncode,
        )
    return result


def spawn(
    cmd: Sequence[str],
    *,
    namespace: str | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in ``namespace``, in its own session so it outlives us.

    stdin is /dev/null; stdout and stderr go to ``log_path`` (appended) or /dev/null. The process
    must stay in the foreground: its pid is the one returned.
    """
    argv = netns_command(cmd, namespace)
    out = open(log_path, "ab") if log_path else open(os.devnull, "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        raise LinuxError(f"cannot start {argv[0]}: {exc}", cmd=argv) from exc
    finally:
        out.close()


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:  # noqa: ASYNC109
    """Wait for ``proc`` (from ``spawn``) to exit on any event loop; return its exit code.

    A pidfd becomes readable when the process exits, so no thread and no pipe EOF is involved:
    a daemonising child (dhclient) may keep inherited descriptors open long after its parent
    exited. On timeout the process is killed and LinuxError raised.
    """
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, on_exit)
    try:
        async with asyncio.timeout(timeout):
            await exited
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        argv = [str(arg) for arg in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
        raise LinuxError(
            f"command timed out after {timeout:g} s: {' '.join(argv)}", cmd=argv
        ) from None
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()
