"""Debian's dhclient in a namespace, made safe: our own script, config, pid and lease files.

Plain ``dhclient`` in ``ip netns exec`` runs Debian's dhclient-script, which rewrites the host's
/etc/resolv.conf (a network namespace shares the host's files). Ours applies only the address,
the MTU and the routes, including the classless static routes of option 121 (RFC 3442).
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import spawn, wait_exit
from cloudmeta.linux.process import pid_alive, read_pid

__all__ = ["dhclient_files", "run_dhclient"]


def dhclient_files(state_dir: Path) -> tuple[Path, Path]:
    """Copy our script (executable) and config into ``state_dir``; return (script, config)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    package = resources.files("cloudmeta.linux")
    script, conf = state_dir / "dhclient-script.sh", state_dir / "dhclient.conf"
    script.write_text(package.joinpath("dhclient-script.sh").read_text())
    script.chmod(0o755)
    conf.write_text(package.joinpath("dhclient.conf").read_text())
    return script, conf


async def run_dhclient(
    namespace: str,
    ifname: str,
    *,
    state_dir: Path,
    timeout: float = 20.0,  # noqa: ASYNC109
) -> Path:
    """Get a lease on ``ifname`` in ``namespace``; return the pid file of the dhclient left running.

    dhclient stays in the background to renew; ``<state_dir>/dhclient-<ifname>.pid`` names it
    (``linux.cleanup(pid_dir=state_dir)`` stops it). Its output goes to
    ``dhclient-<ifname>.log`` there, never to pipes: the daemon would hold them open (under
    uvloop it inherits extra copies it never closes), so waiting for their EOF never ended; we
    wait for the foreground process to exit instead, which ``-1`` makes it do once the lease is
    bound (exit 0, the script has run) or given up (exit 2). Raises LinuxError when no lease comes.
    """
    script, conf = dhclient_files(state_dir)
    pid_file = state_dir / f"dhclient-{ifname}.pid"
    log = state_dir / f"dhclient-{ifname}.log"
    pid_file.unlink(missing_ok=True)
    cmd = [
        "dhclient", "-1", "-v",
        "-sf", str(script), "-cf", str(conf),
        "-pf", str(pid_file), "-lf", str(state_dir / f"dhclient-{ifname}.leases"),
        ifname,
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    # Started from a thread: the fork + exec waits for the child to run, which on a busy run
    # queue took ~50 ms per dhclient; 1 000 at once in the caller's loop blocked it for ~50 s.
    proc = await asyncio.to_thread(spawn, cmd, namespace=namespace, log_path=log)
    code = await wait_exit(proc, timeout)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LinuxError(
            f"dhclient got no lease on {ifname} in {namespace} (exit {code}): "
            f"{' | '.join(tail)} (full log: {log})",
            returncode=code,
        )
    # The parent exits right after forking; the daemon writes its pid file a moment later.
    while not pid_alive(read_pid(pid_file) or 0):
        if time.monotonic() > deadline:
            raise LinuxError(f"dhclient bound {ifname} in {namespace} but wrote no {pid_file}")
        await asyncio.sleep(0.01)
    return pid_file
