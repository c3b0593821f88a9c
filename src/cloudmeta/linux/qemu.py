"""QEMU guests, their disks and their taps: the command lines and the processes.

Knows nothing of clouds: a :class:`Machine` (kernel or firmware boot, one disk, an optional
CD-ROM, one tap NIC, a serial log, a guest-agent socket, SMBIOS strings) in, a QEMU command line
and a daemonised QEMU process out. QEMU runs with ``-daemonize``: its parent exits once the
guest is set up (so a bad option is an error of :func:`start`, with QEMU's own message), and the
guest itself is nobody's child, so no caller has to reap it.

File paths are given relative to the machine's ``workdir`` (QEMU starts there and opens them
before it daemonises), so a deep state dir does not overflow the 108 bytes of a unix socket path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import run, spawn, wait_exit
from cloudmeta.linux.process import cmdline, pid_alive, read_pid, stop_pid

__all__ = [
    "KVM_ACCEL",
    "QEMU",
    "TCG_ACCEL",
    "Machine",
    "create_overlay",
    "create_tap",
    "disk_format",
    "machine_argv",
    "qemu_pid",
    "run_foreground",
    "smbios_arg",
    "start",
    "stop",
]

QEMU = "qemu-system-x86_64"
# tb-size keeps the translation cache (and so QEMU's RSS) near 0.5 GB per guest.
TCG_ACCEL = ("-accel", "tcg,tb-size=128", "-cpu", "max")
KVM_ACCEL = ("-accel", "kvm", "-cpu", "host")
PID_FILE = "qemu.pid"
QEMU_LOG = "qemu.log"


@dataclass(frozen=True, slots=True)
class Machine:
    """One guest. ``kernel``/``initrd``/``append`` boot it directly; without them it boots
    from its disk through the firmware (a user's cloud image with its own boot loader)."""

    name: str
    workdir: Path
    disk: Path
    disk_format: str = "qcow2"
    memory_mb: int = 512
    cpus: int = 1
    kvm: bool = False
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    cdrom: Path | None = None
    tap: str | None = None
    mac: str | None = None
    uuid: str | None = None
    smbios: Mapping[str, str] = field(default_factory=dict)
    serial_log: str = "console.log"
    agent_socket: str | None = "qga.sock"
    snapshot: bool = False
    extra: Sequence[str] = ()


def _escape(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def smbios_arg(table_type: int, fields: Mapping[str, str]) -> str:
    """``type=1,manufacturer=...`` for ``-smbios``."""
    return ",".join([f"type={table_type}", *(f"{k}={_escape(v)}" for k, v in fields.items())])


def machine_argv(machine: Machine, qemu: str = QEMU) -> list[str]:
    """The full QEMU command line of ``machine`` (pure)."""
    m = machine
    argv = [qemu, "-name", _escape(m.name), "-nodefaults", "-no-user-config", "-display", "none"]
    argv += [*(KVM_ACCEL if m.kvm else TCG_ACCEL), "-m", str(m.memory_mb), "-smp", str(m.cpus)]
    if m.uuid:
        argv += ["-uuid", m.uuid]
    if m.smbios:
        argv += ["-smbios", smbios_arg(1, m.smbios)]
    if m.kernel is not None:
        argv += ["-kernel", str(m.kernel)]
        if m.initrd is not None:
            argv += ["-initrd", str(m.initrd)]
        if m.append:
            argv += ["-append", m.append]
    drive = f"file={_escape(str(m.disk))},if=virtio,format={m.disk_format},cache=unsafe"
    if m.snapshot:
        drive += ",snapshot=on"
    argv += ["-drive", drive]
    if m.cdrom is not None:
        cdrom = f"file={_escape(str(m.cdrom))},media=cdrom,if=ide,readonly=on,format=raw"
        argv += ["-drive", cdrom]
    if m.tap is not None:
        argv += ["-netdev", f"tap,id=net0,ifname={m.tap},script=no,downscript=no"]
        nic = "virtio-net-pci,netdev=net0"
        if m.mac:
            nic += f",mac={m.mac}"
        argv += ["-device", nic]
    argv += ["-serial", f"file:{m.serial_log}"]
    if m.agent_socket:
        argv += [
            "-chardev",
            f"socket,id=qga0,path={m.agent_socket},server=on,wait=off",
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
    argv += ["-no-reboot", *m.extra]
    return argv


def _in_dir(workdir: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` run with ``workdir`` as its current directory."""
    return ["sh", "-c", 'cd "$0" && exec "$@"', str(workdir), *argv]


async def start(machine: Machine, *, namespace: str | None = None, timeout: float = 30.0) -> int:  # noqa: ASYNC109
    """Start ``machine`` daemonised (in ``namespace``, where its tap is); return QEMU's pid."""
    # The absolute pid file path in QEMU's command line tells our guest from another process
    # with a recycled pid (a daemonised QEMU changes its cwd to /).
    argv = [*machine_argv(machine), "-daemonize", "-pidfile", str(machine.workdir / PID_FILE)]
    log = machine.workdir / QEMU_LOG
    # Output to a file and a pidfd wait, not pipes: the daemonised guest must not hold a pipe
    # of ours open (some event loops' pipes survive QEMU's redirection of its stdio).
    proc = spawn(_in_dir(machine.workdir, argv), namespace=namespace, log_path=log)
    code = await wait_exit(proc, timeout)
    pid = qemu_pid(machine.workdir)
    if code != 0 or pid is None:
        try:
            message = log.read_text(errors="replace").strip()[-800:]
        except OSError:
            message = ""
        raise LinuxError(
            f"QEMU did not start {machine.name}: {message or f'exit {code}'}", cmd=argv
        )
    return pid


async def run_foreground(machine: Machine, timeout: float) -> tuple[int | None, str]:  # noqa: ASYNC109
    """Run ``machine`` until it powers off; (exit code or None on timeout, QEMU's stderr)."""
    try:
        result = await run(
            _in_dir(machine.workdir, machine_argv(machine)), timeout=timeout, check=False
        )
    except LinuxError:  # timed out (and killed)
        return None, ""
    return result.returncode, result.stderr


def qemu_pid(workdir: Path) -> int | None:
    """The pid of the QEMU started in ``workdir``, if it still runs."""
    pid_file = workdir / PID_FILE
    pid = read_pid(pid_file)
    if pid is None or not pid_alive(pid) or str(pid_file) not in cmdline(pid):
        return None
    return pid


async def stop(workdir: Path, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Stop the QEMU of ``workdir`` (SIGTERM, then SIGKILL); idempotent."""
    pid = qemu_pid(workdir)
    if pid is not None:
        await stop_pid(pid, timeout=timeout)


async def create_overlay(base: Path, overlay: Path, base_format: str) -> None:
    """A copy-on-write qcow2 ``overlay`` over ``base`` (which it never writes)."""
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format]
    await run([*argv, str(overlay)])


async def disk_format(path: Path) -> str:
    """``qcow2``, ``raw``, ... as ``qemu-img info`` reads it."""
    result = await run(["qemu-img", "info", "--output=json", str(path)])
    try:
        return str(json.loads(result.stdout)["format"])
    except (ValueError, KeyError) as exc:
        raise LinuxError(f"qemu-img cannot read {path}: {result.stdout[:200]}") from exc


async def create_tap(namespace: str | None, name: str, *, bridge: str) -> None:
    """A persistent tap ``name`` on ``bridge`` (both in ``namespace``), up; idempotent."""
    prefix = ["ip", "-n", namespace] if namespace else ["ip"]
    found = await run([*prefix, "link", "show", name], check=False)
    if found.returncode != 0:
        await run([*prefix, "tuntap", "add", "dev", name, "mode", "tap"])
    await run([*prefix, "link", "set", name, "master", bridge, "up"])
