"""A lab instance: a network namespace that boots like a VM, with real DHCP and real cloud-init.

The network namespace and its port (a veth with the port's MAC) are made by the caller; this
module gives it a life: :func:`start` writes the image config into a fresh overlay upper dir and
starts :mod:`~cloudmeta.lab.bootscript` as pid 1 of new pid/UTS/mount namespaces inside that
network namespace; :func:`wait_booted` follows its steps; :func:`facts` reads what cloud-init did
(from the upper dir, and from inside for the hostname and the package); :func:`kill` ends it.

Nothing here can change the host: every write of the instance lands in its upper dir, and its
mounts live in a private mount namespace that disappears with its pid 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.lab.bootscript import boot_script, ec2_hypervisor_uuid, instance_env
from cloudmeta.lab.cloudcfg import (
    DEFAULT_USER,
    Datasource,
    lab_cloud_cfg,
    lab_dhclient_conf,
    metadata_urls,
)
from cloudmeta.lab.errors import LabError
from cloudmeta.linux import LinuxError, run, spawn

__all__ = [
    "InstanceFacts",
    "InstancePaths",
    "exec_argv",
    "facts",
    "kill",
    "read_status",
    "start",
    "wait_booted",
]

_UNSHARE = ["unshare", "--uts", "--mount", "--pid", "--fork", "--propagation", "private"]


@dataclass(frozen=True, slots=True)
class InstancePaths:
    """Where one instance's files live (all under the lab's state dir)."""

    dir: Path

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def steps(self) -> Path:
        return self.dir / "steps"

    @property
    def status(self) -> Path:
        return self.dir / "status"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def user_data(self) -> Path:
        return self.dir / "user-data"


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    """What the instance looks like after its boot, seen from the inside."""

    result: str  # booting | ok | failed
    hostname: str | None
    password_set: bool
    package: str | None
    datasource: str | None
    errors: list[str]
    boot_seconds: float | None
    last_step: str | None


def start(
    paths: InstancePaths,
    namespace: str,
    interface: str,
    datasource: Datasource,
    server_id: str | None = None,
    *,
    ipv4: bool = True,
    ipv6_mode: str | None = None,
) -> int:
    """Prepare the instance's disk (upper dir) and start its boot; return pid 1's host pid.

    An EC2 instance with a ``server_id`` sees the platform identity an EC2 hypervisor gives.
    ``ipv4``/``ipv6_mode``: the address families of its network (see ``boot_script``); an
    OpenStack instance with IPv6 asks the metadata service over IPv6 first.
    """
    if paths.dir.exists():
        raise LabError(f"instance dir {paths.dir} exists: kill the instance first")
    for sub in ("upper", "work", "root"):
        (paths.dir / sub).mkdir(parents=True)
    cloud_dir = paths.upper / "etc" / "cloud"
    (cloud_dir / "cloud.cfg.d").mkdir(parents=True)
    urls = None
    if datasource is Datasource.OPENSTACK:
        urls = metadata_urls(ipv4=ipv4, ipv6=ipv6_mode is not None, iface=interface)
    (cloud_dir / "cloud.cfg").write_text(lab_cloud_cfg(datasource, urls))
    (paths.upper / "etc" / "dhcp").mkdir(parents=True)
    (paths.upper / "etc" / "dhcp" / "dhclient.conf").write_text(lab_dhclient_conf())
    _private_dpkg_state(paths)
    script = paths.dir / "boot.sh"
    platform = None
    if datasource is Datasource.EC2 and server_id is not None:
        platform = ec2_hypervisor_uuid(server_id)
    script.write_text(
        boot_script(paths.dir, interface, hypervisor_uuid=platform, ipv4=ipv4, ipv6_mode=ipv6_mode)
    )
    (paths.dir / "started").write_text(f"{time.time():.3f}\n")
    proc = spawn(
        ["env", "-i", *_env_args(datasource), *_UNSHARE, "sh", str(script)],
        namespace=namespace,
        log_path=paths.dir / "boot.log",
    )
    pid = _child_of(proc.pid)
    paths.pid_file.write_text(f"{pid}\n")
    return pid


HOST_DPKG = Path("/var/lib/dpkg")


def _private_dpkg_state(paths: InstancePaths, host: Path = HOST_DPKG) -> None:
    """The instance's own copy of the package database, as of its start.

    The overlay's lower layer is the live host: while the host installs packages (a
    ``make install`` beside the lab), ``/var/lib/dpkg/updates`` holds dpkg's journal and the
    instance's ``apt-get install`` stops at "dpkg was interrupted" (exit 100). The host
    replaces ``status`` by rename, so a copy of the top-level files is a consistent
    checkpoint; the boot script mounts an empty ``updates`` of the instance's own over the
    host's journal (``info/`` stays shared: dpkg only reads the lists of installed packages).
    """
    dpkg = paths.upper / "var" / "lib" / "dpkg"
    dpkg.mkdir(parents=True, exist_ok=True)
    for entry in host.iterdir():
        if entry.is_file() and not entry.is_symlink():
            shutil.copy2(entry, dpkg / entry.name)
    (paths.dir / "dpkg-updates").mkdir()


def _env_args(datasource: Datasource) -> list[str]:
    return [f"{k}={v}" for k, v in instance_env(datasource is Datasource.OPENSTACK).items()]


def _child_of(pid: int, timeout: float = 5.0) -> int:
    """The host pid of ``unshare --fork``'s child, the instance's pid 1."""
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            found = children.read_text().split()
            if found:
                return int(found[0])
        time.sleep(0.01)
    raise LabError(f"the instance's boot process {pid} did not start; see its boot.log")


def read_pid(paths: InstancePaths) -> int | None:
    """pid 1 of the instance if it is still running."""
    try:
        pid = int(paths.pid_file.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def read_status(paths: InstancePaths) -> str:
    """``booting`` until the boot script finishes, then ``ok`` or ``failed``."""
    try:
        status = paths.status.read_text().strip()
    except FileNotFoundError:
        return "booting" if read_pid(paths) is not None else "failed"
    return status if status in ("ok", "failed") else "failed"


def last_step(paths: InstancePaths) -> str | None:
    """The last boot step reached (``dhcp``, ``init``, ...), for progress lines."""
    try:
        lines = paths.steps.read_text().split("\n")
    except FileNotFoundError:
        return None
    done = [line.split() for line in lines if line.strip()]
    return done[-1][1] if done else None


async def wait_booted(paths: InstancePaths, timeout: float = 180.0) -> str:  # noqa: ASYNC109
    """Wait until the boot script is done; return ``ok`` or ``failed`` (``failed`` on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(paths)
        if status != "booting":
            return status
        await asyncio.sleep(0.2)
    return "failed"


def boot_seconds(paths: InstancePaths) -> float | None:
    """Seconds from start to the end of cloud-init's last stage."""
    try:
        started = float((paths.dir / "started").read_text())
        ended = paths.status.stat().st_mtime
    except (OSError, ValueError):
        return None
    return round(ended - started, 1)


def exec_argv(paths: InstancePaths, argv: Sequence[str]) -> list[str]:
    """The host command that runs ``argv`` inside the instance (its namespaces and root)."""
    pid = read_pid(paths)
    if pid is None:
        raise LabError(
            f"instance {paths.dir.name} is not running: boot it with `cloudmeta lab boot`"
        )
    ns = ["nsenter", "-t", str(pid), "--net", "--mount", "--uts", "--pid"]
    env = ["env", "-i", *_env_args(Datasource.EC2)]
    return [*ns, "chroot", str(paths.root), *env, *argv]


async def _inside(paths: InstancePaths, argv: Sequence[str]) -> str | None:
    try:
        result = await run(exec_argv(paths, argv), timeout=15)
    except (LinuxError, LabError):
        return None
    return result.stdout.strip()


def _password_set(paths: InstancePaths, user: str) -> bool:
    """Whether ``user`` has a usable password hash in the instance's own ``/etc/shadow``."""
    try:
        lines = (paths.upper / "etc" / "shadow").read_text().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1].startswith("$")
    return False


def _result_json(paths: InstancePaths) -> tuple[str | None, list[str]]:
    try:
        data = json.loads((paths.upper / "var/lib/cloud/data/result.json").read_text())
    except (OSError, ValueError):
        return None, ["cloud-init wrote no result.json"]
    v1 = data.get("v1", {})
    return v1.get("datasource"), [str(e) for e in v1.get("errors", [])]


async def facts(paths: InstancePaths, package: str = "cmt-hello") -> InstanceFacts:
    """Collect what cloud-init did inside the instance."""
    status = read_status(paths)
    datasource, errors = _result_json(paths) if status != "booting" else (None, [])
    if status == "ok" and errors:
        status = "failed"
    hostname = await _inside(paths, ["hostname"])
    probe = f"command -v {package} >/dev/null && {package} --version"
    version = await _inside(paths, ["sh", "-c", probe])
    return InstanceFacts(
        result=status,
        hostname=hostname or None,
        password_set=_password_set(paths, DEFAULT_USER),
        package=version or None,
        datasource=datasource,
        errors=errors,
        boot_seconds=boot_seconds(paths) if status != "booting" else None,
        last_step=last_step(paths),
    )


async def kill(paths: InstancePaths) -> None:
    """Stop the instance (its whole pid namespace) and remove its files; idempotent."""
    pid = read_pid(paths)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while read_pid(paths) is not None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    if paths.dir.exists():
        await asyncio.to_thread(shutil.rmtree, paths.dir, True)
