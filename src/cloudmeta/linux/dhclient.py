"""Debian's dhclient in a namespace, made safe: our own script, config, pid and lease files.

Plain ``dhclient`` in ``ip netns exec`` runs Debian's dhclient-script, which rewrites the host's
/etc/resolv.conf (a network namespace shares the host's files). Ours applies only the address,
the MTU and the routes, including the classless static routes of option 121 (RFC 3442).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cloudmeta.linux.execute import run

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
    (``linux.cleanup(pid_dir=state_dir)`` stops it). Raises LinuxError when no lease comes.
    """
    script, conf = dhclient_files(state_dir)
    pid_file = state_dir / f"dhclient-{ifname}.pid"
    cmd = [
        "dhclient", "-1", "-v",
        "-sf", str(script), "-cf", str(conf),
        "-pf", str(pid_file), "-lf", str(state_dir / f"dhclient-{ifname}.leases"),
        ifname,
    ]  # fmt: skip
    await run(cmd, namespace=namespace, timeout=timeout)
    return pid_file
