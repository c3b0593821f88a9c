"""A lab VM instance: QEMU on a tap of its network's bridge, as Nova's libvirt driver boots one.

Per instance (all in the instance's dir): a qcow2 overlay over the cached image, the serial
console log, the guest agent's socket, QEMU's pid file and the time QEMU was started. The
SMBIOS strings are Nova's (``OpenStack Foundation`` / ``OpenStack Nova`` / the server uuid), so
cloud-init's ``ds-identify`` picks the OpenStack datasource on its own.

The facts ``lab status`` shows come from the image's boot report on the serial console (see
:mod:`~cloudmeta.lab.vm.guest`); ``lab exec`` runs through the guest agent.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudmeta.lab.errors import LabError
from cloudmeta.lab.vm import agent, console
from cloudmeta.lab.vm.accel import Accel
from cloudmeta.lab.vm.image import BootImage
from cloudmeta.linux import LinuxError, qemu

__all__ = [
    "NOVA_SMBIOS",
    "VmFacts",
    "boot_seconds",
    "ec2_uuid",
    "exec_in",
    "facts",
    "kill",
    "last_step",
    "machine",
    "running",
    "start",
    "status",
    "wait_booted",
]

NOVA_SMBIOS = {"manufacturer": "OpenStack Foundation", "product": "OpenStack Nova"}
# An EC2 (Xen HVM) guest's DMI: cloud-init tells AWS by a product uuid and serial that both
# start with "ec2" (and then takes the IMDSv2 token path).
EC2_SMBIOS = {"manufacturer": "Xen", "product": "HVM domU", "version": "4.11.amazon"}
OVERLAY = "disk.qcow2"
AGENT_SOCKET = "qga.sock"
CONSOLE = "console.log"
_STARTED = "started"


@dataclass(frozen=True, slots=True)
class VmFacts:
    """What ``lab status`` shows of a VM (from its boot report)."""

    result: str  # booting | ok | failed
    hostname: str | None
    password_set: bool
    package: str | None
    datasource: str | None
    errors: list[str]
    boot_seconds: float | None
    metadata_next_hop: str | None
    ips: list[str]


def machine(
    directory: Path,
    *,
    name: str,
    server_id: str,
    image: BootImage,
    accel: Accel,
    tap: str,
    mac: str,
    memory_mb: int = 512,
    cdrom: Path | None = None,
    ec2: bool = False,
) -> qemu.Machine:
    """The QEMU machine of one instance (pure): Nova's SMBIOS strings, or with ``ec2`` those of
    an EC2 guest."""
    if ec2:
        uuid = ec2_uuid(server_id)
        smbios = {**EC2_SMBIOS, "serial": uuid, "uuid": uuid}
    else:
        uuid = server_id
        smbios = {**NOVA_SMBIOS, "serial": uuid, "uuid": uuid, "family": "Virtual Machine"}
    return qemu.Machine(
        name=name,
        workdir=directory,
        disk=directory / OVERLAY,
        disk_format="qcow2",
        memory_mb=memory_mb,
        kvm=accel.kvm,
        kernel=image.kernel,
        initrd=image.initrd,
        append=image.append,
        cdrom=cdrom,
        tap=tap,
        mac=mac,
        uuid=uuid,
        smbios=smbios,
        serial_log=CONSOLE,
        agent_socket=AGENT_SOCKET,
    )


def ec2_uuid(server_id: str) -> str:
    """The server uuid as EC2's Xen gives it: its first three hex digits replaced by ``ec2``."""
    return "ec2" + server_id[3:]


async def start(
    directory: Path,
    *,
    name: str,
    server_id: str,
    image: BootImage,
    accel: Accel,
    namespace: str,
    tap: str,
    mac: str,
    memory_mb: int = 512,
    cdrom: Path | None = None,
    ec2: bool = False,
) -> int:
    """Make the overlay and start QEMU in ``namespace`` (where ``tap`` is); QEMU's pid."""
    try:
        await asyncio.to_thread(directory.mkdir, parents=True)
    except FileExistsError:
        raise LabError(f"instance dir {directory} exists: kill the instance first") from None
    await qemu.create_overlay(image.disk, directory / OVERLAY, image.format)
    spec = machine(
        directory,
        name=name,
        server_id=server_id,
        image=image,
        accel=accel,
        tap=tap,
        mac=mac,
        memory_mb=memory_mb,
        cdrom=cdrom,
        ec2=ec2,
    )
    (directory / _STARTED).write_text(f"{time.time():.3f}\n")
    try:
        return await qemu.start(spec, namespace=namespace)
    except LinuxError as exc:
        raise LabError(str(exc)) from exc


def running(directory: Path) -> bool:
    return qemu.qemu_pid(directory) is not None


def _report(directory: Path) -> dict[str, Any] | None:
    return console.read_report(directory / CONSOLE)


def status(directory: Path) -> str:
    """``booting`` until the boot report is on the console, then ``ok`` or ``failed``."""
    report = _report(directory)
    if report is None:
        return "booting" if running(directory) else "failed"
    return "ok" if _ok(report) else "failed"


def _ok(report: dict[str, Any]) -> bool:
    return bool(report.get("final_finished")) and not report.get("errors")


def last_step(directory: Path) -> str | None:
    try:
        text = (directory / CONSOLE).read_text(errors="replace")
    except OSError:
        return None
    return console.boot_stage(text)


async def wait_booted(directory: Path, timeout: float = 300.0) -> str:  # noqa: ASYNC109
    """Until the boot report (``ok``/``failed``) or QEMU's end; ``failed`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = status(directory)
        if found != "booting":
            return found
        await asyncio.sleep(0.5)
    return "failed"


def boot_seconds(directory: Path, report: dict[str, Any]) -> float | None:
    """QEMU start (host clock) to the end of cloud-init's ``final`` (guest clock, which the
    guest took from QEMU's RTC at boot: whole seconds, so up to 1 s early)."""
    try:
        started = float((directory / _STARTED).read_text())
    except (OSError, ValueError):
        return None
    finished = report.get("final_finished")
    if not isinstance(finished, int | float):
        return None
    return round(float(finished) - started, 1)


def facts(directory: Path, package: str) -> VmFacts:
    """The VM's row facts from its boot report (or ``booting``/``failed`` without one)."""
    report = _report(directory)
    if report is None:
        alive = running(directory)
        return VmFacts(
            result="booting" if alive else "failed",
            hostname=None,
            password_set=False,
            package=None,
            datasource=None,
            errors=[] if alive else ["QEMU is not running and the guest sent no boot report"],
            boot_seconds=None,
            metadata_next_hop=None,
            ips=[],
        )
    errors = [str(e) for e in report.get("errors") or []]
    if not report.get("cloud_init_ran"):
        errors.append("cloud-init did not run (ds-identify found no datasource?)")
    elif not report.get("final_finished"):
        errors.append("cloud-init's final stage did not finish")
    elif "DataSourceNone" in str(report.get("datasource") or "DataSourceNone"):
        # cloud-init's fallback ends "done" without errors, but nothing of the instance's
        # metadata was read: the hostname stays the image's, no user-data ran.
        errors.append("cloud-init found no datasource and fell back to DataSourceNone")
    version = (report.get("packages") or {}).get(package)
    return VmFacts(
        result="ok" if not errors else "failed",
        hostname=report.get("hostname"),
        password_set=bool(report.get("password_set")),
        package=f"{package} {version}" if version else None,
        datasource=report.get("datasource"),
        errors=errors,
        boot_seconds=boot_seconds(directory, report),
        metadata_next_hop=report.get("metadata_via"),
        ips=[str(ip) for ip in report.get("ips") or []],
    )


async def exec_in(
    directory: Path,
    argv: Sequence[str],
    timeout: float = 60.0,  # noqa: ASYNC109
) -> agent.ExecResult:
    """Run ``argv`` in the guest through its agent."""
    if not running(directory):
        raise LabError(f"VM {directory.name} is not running: boot it with `cloudmeta lab boot`")
    return await agent.guest_exec(directory / AGENT_SOCKET, argv, timeout=timeout)


async def kill(directory: Path) -> None:
    """Stop QEMU and remove the instance's files (overlay, console, socket); idempotent."""
    await qemu.stop(directory)
    await asyncio.to_thread(shutil.rmtree, directory, True)
