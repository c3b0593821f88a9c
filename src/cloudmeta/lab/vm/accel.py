"""KVM or TCG: use KVM only where a stock Debian kernel really boots under it.

``/dev/kvm`` can exist and answer ``KVM_CREATE_VM`` and still not run a stock guest (a nested,
PVM-based KVM: ``-cpu host`` fails on MSR 0x10a, ``-cpu kvm64`` dies on ``cmpxchg16b``). So
the lab boots the image's own kernel once under KVM with a tiny ``init`` that prints a marker
and powers off; the answer is remembered in the image cache (``accel.json``) for that kernel,
so the probe runs once per machine and kernel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.lab.vm.guest import KVM_PROBE_MARKER
from cloudmeta.lab.vm.image import CachedImage
from cloudmeta.linux import qemu

__all__ = ["Accel", "accelerator", "decide", "describe", "kvm_device_usable"]

_PROBE_TIMEOUT = 30.0
_FILE = "accel.json"


@dataclass(frozen=True, slots=True)
class Accel:
    kvm: bool
    reason: str


def kvm_device_usable(device: str = "/dev/kvm") -> bool:
    """Whether we may open the KVM device at all (no probe boot without it)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def decide(device_usable: bool, probe_booted: bool | None, detail: str = "") -> Accel:
    """The decision from the two facts (pure): the device opens, and a stock kernel booted."""
    if not device_usable:
        return Accel(False, "no usable /dev/kvm")
    if probe_booted:
        return Accel(True, "a stock Debian kernel booted under KVM")
    why = f": {detail}" if detail else ""
    return Accel(False, f"/dev/kvm is there but a stock Debian kernel does not boot under it{why}")


def describe(accel: Accel) -> str:
    """The one line a user reads."""
    if accel.kvm:
        return f"accelerator: KVM (-accel kvm -cpu host; {accel.reason})"
    return f"accelerator: TCG software emulation (-accel tcg,tb-size=128 -cpu max; {accel.reason})"


def _fresh(workdir: Path, log: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)


async def _probe(image: CachedImage, workdir: Path) -> tuple[bool, str]:
    log = workdir / "kvm-probe.log"
    await asyncio.to_thread(_fresh, workdir, log)
    boot = image.boot
    machine = qemu.Machine(
        name="cmt-kvm-probe",
        workdir=workdir,
        disk=boot.disk,
        disk_format=boot.format,
        memory_mb=256,
        kvm=True,
        kernel=boot.kernel,
        initrd=boot.initrd,
        append="root=/dev/vda ro console=ttyS0 panic=-1 init=/usr/local/sbin/cmt-kvm-probe",
        serial_log=log.name,
        agent_socket=None,
        snapshot=True,
    )
    code, stderr = await qemu.run_foreground(machine, _PROBE_TIMEOUT)
    try:
        booted = KVM_PROBE_MARKER in log.read_text(errors="replace")
    except OSError:
        booted = False
    if booted:
        return True, ""
    if code is None:
        return False, f"no user space within {_PROBE_TIMEOUT:g} s"
    last = stderr.strip().splitlines()[-1:] or [f"QEMU exit {code}"]
    return False, last[0][:160]


def _kernel_digest(image: CachedImage) -> str | None:
    """The probe's answer holds for this kernel (a new recipe with the same kernel reuses it)."""
    kernel = image.boot.kernel
    if kernel is None:
        return None
    try:
        return hashlib.sha256(kernel.read_bytes()).hexdigest()
    except OSError:
        return None


async def accelerator(cache: Path, image: CachedImage | None) -> Accel:
    """KVM or TCG for this machine, probing once (per image kernel) and remembering it."""
    if not kvm_device_usable():
        return decide(False, None)
    record = cache / _FILE
    kernel = _kernel_digest(image) if image is not None else None
    try:
        saved = json.loads(record.read_text())
        if image is None or saved.get("kernel") == kernel:
            return Accel(bool(saved["kvm"]), str(saved["reason"]))
    except (OSError, ValueError, KeyError):
        pass
    if image is None:  # nothing to probe with yet: the safe choice
        return Accel(False, "KVM not probed yet (build the lab image to probe it)")
    booted, detail = await _probe(image, cache / ".kvm-probe")
    accel = decide(True, booted, detail)
    record.write_text(
        json.dumps(
            {
                "kvm": accel.kvm,
                "reason": accel.reason,
                "kernel": kernel,
                "probed": time.time(),
            }
        )
        + "\n"
    )
    return accel
