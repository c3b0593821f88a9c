"""The lab's VM image: a Debian bookworm cloud image built here, cached by the hash of its recipe.

The recipe is data (:data:`RECIPE`): the packages ``mmdebstrap`` installs from the machine's
configured mirror, the files written into the tree, the files removed, the disk size and the
kernel command line. Its hash names the cached image, so a changed recipe builds a new image
and an unchanged one is never rebuilt (unless ``force``). The cache is machine-wide (not in a
state dir: every lab and every test run shares the one build).

Nothing in the image configures cloud-init: it runs with Debian's defaults and finds the
metadata service from the SMBIOS strings the hypervisor gives (as Nova's libvirt driver does).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cloudmeta.lab.errors import LabError
from cloudmeta.lab.vm.guest import PROBE_SCRIPT, REPORT_SCRIPT, REPORT_UNIT
from cloudmeta.linux import LinuxError
from cloudmeta.linux.qemu import disk_format
from cloudmeta.linux.rootfs import bootstrap, make_ext4, mounts_under, run_in_root

__all__ = [
    "RECIPE",
    "BootImage",
    "CachedImage",
    "Recipe",
    "build_image",
    "cached_image",
    "ensure_image",
    "list_images",
    "user_image",
]

Say = Callable[[str], None]
_REPORT_UNIT = "cmt-lab-report.service"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content (and so its hash)."""

    name: str = "debian-bookworm"
    suite: str = "bookworm"
    packages: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # path in the image -> content
    executables: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)  # path -> symlink target
    remove: tuple[str, ...] = ()  # globs
    commands: tuple[tuple[str, ...], ...] = ()  # run in the tree (chroot) after the files
    disk_size: str = "2G"
    append: str = ""  # the kernel command line

    def digest(self) -> str:
        """The recipe's hash (sha256 of its canonical JSON)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


_MASKED_UNITS = (
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "systemd-binfmt.service",
)

RECIPE = Recipe(
    packages=(
        "linux-image-cloud-amd64",
        "systemd-sysv",
        "udev",
        "dbus",
        "cloud-init",
        "isc-dhcp-client",
        "isc-dhcp-common",
        "ifupdown",
        "iproute2",
        # cloud-init's ifupdown renderer adds a static subnet's routes (a config drive's
        # network_data.json on a network without DHCP) with `route add`.
        "net-tools",
        "netbase",
        "sudo",
        "openssh-server",
        "qemu-guest-agent",
        "curl",
        "ca-certificates",
    ),
    files={
        "/etc/hostname": "localhost\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        "/etc/fstab": "/dev/vda / ext4 rw,discard,errors=remount-ro 0 1\n",
        # C.UTF-8 is in libc: no locales package, and cloud-init's locale module succeeds.
        "/etc/default/locale": "LANG=C.UTF-8\n",
        "/etc/network/interfaces": (
            "# cloud-init writes the NICs' stanzas into interfaces.d\n"
            "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n"
        ),
        "/etc/machine-id": "",  # systemd makes one per guest at first boot
        "/usr/local/sbin/cmt-lab-report": REPORT_SCRIPT,
        f"/etc/systemd/system/{_REPORT_UNIT}": REPORT_UNIT,
        "/usr/local/sbin/cmt-kvm-probe": PROBE_SCRIPT,
        # A small initrd: only what finds the root on a virtio disk (Debian's default takes
        # "most" modules, 15 MB to unpack in an emulated CPU; this one is about 6 MB), and the
        # IDE CD-ROM of a config drive: probed in the initrd, /dev/sr0 exists before systemd's
        # generators run, so ds-identify's blkid always sees the config-2 label (loaded later
        # by udev, it raced the generator and cloud-init fell back to DataSourceNone).
        "/etc/initramfs-tools/conf.d/cmt-lab": "MODULES=list\n",
        "/etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\next4\nata_piix\nsr_mod\n",
    },
    executables=("/usr/local/sbin/cmt-lab-report", "/usr/local/sbin/cmt-kvm-probe"),
    links={
        f"/etc/systemd/system/cloud-init.target.wants/{_REPORT_UNIT}": (
            f"/etc/systemd/system/{_REPORT_UNIT}"
        ),
        # Units a short-lived lab guest does not need, masked: under TCG one vCPU runs every
        # unit, and e2scrub_reap alone took 16.7 s of it beside cloud-init's stages.
        **{f"/etc/systemd/system/{unit}": "/dev/null" for unit in _MASKED_UNITS},
    },
    # The host's resolver and the build's host keys and ids must not reach any guest.
    remove=(
        "/etc/resolv.conf",
        "/etc/ssh/ssh_host_*",
        "/var/lib/dbus/machine-id",
        "/var/cache/apt/*.bin",
        "/var/lib/apt/lists/*_*",
    ),
    commands=(("update-initramfs", "-u", "-k", "all"),),
    append="root=/dev/vda rw console=ttyS0",
)


@dataclass(frozen=True, slots=True)
class BootImage:
    """What a guest boots: a disk (never written: each guest gets an overlay) and, for the
    lab's own image, the kernel and initrd for a direct boot."""

    disk: Path
    format: str
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""


@dataclass(frozen=True, slots=True)
class CachedImage:
    """One built image in the cache."""

    dir: Path
    name: str
    recipe_hash: str
    created: float
    size: int  # bytes the disk really uses

    @property
    def boot(self) -> BootImage:
        meta = json.loads((self.dir / "image.json").read_text())
        return BootImage(
            disk=self.dir / "disk.raw",
            format="raw",
            kernel=self.dir / "vmlinuz",
            initrd=self.dir / "initrd.img",
            append=str(meta.get("append", "")),
        )


def _image_dir(cache: Path, recipe: Recipe) -> Path:
    return cache / f"{recipe.name}-{recipe.digest()[:12]}"


def _load(path: Path) -> CachedImage | None:
    try:
        meta = json.loads((path / "image.json").read_text())
        disk = (path / "disk.raw").stat()
    except (OSError, ValueError):
        return None
    return CachedImage(
        dir=path,
        name=str(meta["name"]),
        recipe_hash=str(meta["recipe_hash"]),
        created=float(meta["created"]),
        size=disk.st_blocks * 512,
    )


def cached_image(cache: Path, recipe: Recipe = RECIPE) -> CachedImage | None:
    """The cached build of ``recipe``, if there is one."""
    return _load(_image_dir(cache, recipe))


def list_images(cache: Path) -> list[CachedImage]:
    """Every image in the cache, newest first."""
    if not cache.is_dir():
        return []
    found = [_load(p) for p in sorted(cache.iterdir()) if p.is_dir()]
    return sorted(filter(None, found), key=lambda i: i.created, reverse=True)


def _customise(root: Path, recipe: Recipe) -> None:
    """The recipe's files, links and removals applied to the bootstrapped tree."""
    for pattern in recipe.remove:
        for found in root.glob(pattern.lstrip("/")):
            if found.is_dir() and not found.is_symlink():
                shutil.rmtree(found)
            else:
                found.unlink()
    for path, content in recipe.files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        target.write_text(content)
        target.chmod(0o755 if path in recipe.executables else 0o644)
    for path, dest in recipe.links.items():
        link = root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(dest)


def _copy_boot_files(root: Path, out: Path) -> None:
    """The kernel and initrd, for QEMU's direct boot (the cloud kernel's virtio drivers are
    modules: the initrd is needed)."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LabError(f"the image has no kernel or initrd in {root / 'boot'}")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrds[-1], out / "initrd.img")


async def build_image(
    cache: Path,
    recipe: Recipe = RECIPE,
    *,
    force: bool = False,
    say: Say | None = None,
    on_line: Callable[[str], None] | None = None,
) -> CachedImage:
    """Build ``recipe`` into the cache (or return the cached build unless ``force``).

    ``say`` gets a line per step, ``on_line`` each line of ``mmdebstrap``'s progress.
    """
    tell = say or (lambda _: None)
    await asyncio.to_thread(cache.mkdir, parents=True, exist_ok=True)
    # The lock is taken in a thread: a second builder waits without blocking its event loop.
    lock = await asyncio.to_thread(_acquire, cache)
    try:
        found = cached_image(cache, recipe)
        if found is not None and not force:
            return found
        final = _image_dir(cache, recipe)
        work = cache / f".build-{recipe.digest()[:12]}-{os.getpid()}"
        await asyncio.to_thread(_remove_build, work)
        work.mkdir()
        try:
            root = work / "root"
            started = time.monotonic()
            tell(f"mmdebstrap {recipe.suite} ({len(recipe.packages)} packages)")
            await bootstrap(recipe.suite, root, recipe.packages, on_line=on_line)
            tell(f"bootstrapped in {time.monotonic() - started:.0f} s; customising")
            await asyncio.to_thread(_customise, root, recipe)
            for command in recipe.commands:
                tell(" ".join(command))
                await run_in_root(root, command)
            await asyncio.to_thread(_copy_boot_files, root, work)
            tell(f"mkfs.ext4 -d ({recipe.disk_size})")
            await make_ext4(root, work / "disk.raw", recipe.disk_size, "cmt-root")
            await asyncio.to_thread(shutil.rmtree, root)
            meta: dict[str, Any] = {
                "name": recipe.name,
                "recipe_hash": recipe.digest(),
                "created": time.time(),
                "append": recipe.append,
                "packages": list(recipe.packages),
            }
            (work / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
            await asyncio.to_thread(shutil.rmtree, final, True)
            os.replace(work, final)
        except BaseException:
            await asyncio.to_thread(_remove_build, work)
            raise
        built = _load(final)
        assert built is not None
        tell(f"image {final.name} built in {time.monotonic() - started:.0f} s")
        return built
    finally:
        await asyncio.to_thread(_release, lock)


def _remove_build(work: Path) -> None:
    """Delete a failed build's tree, unless something is still mounted inside it."""
    left = mounts_under(work)
    if left:
        raise LabError(f"not deleting {work}: still mounted inside it: {', '.join(left)}")
    shutil.rmtree(work, ignore_errors=True)


def _acquire(cache: Path) -> int:
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


async def ensure_image(cache: Path, say: Say | None = None) -> CachedImage:
    """The lab's image, built first if the cache has none for the current recipe."""
    found = cached_image(cache)
    if found is not None:
        return found
    if say is not None:
        say(f"building the lab's VM image into {cache} (once per machine, about a minute)")
    try:
        return await build_image(cache, say=say)
    except LinuxError as exc:
        raise LabError(f"cannot build the VM image: {exc}") from exc


async def user_image(path: Path) -> BootImage:
    """A cloud image the user has (qcow2 or raw with its own boot loader)."""
    path = await asyncio.to_thread(path.absolute)
    if not await asyncio.to_thread(path.is_file):
        raise LabError(f"no image file {path}")
    fmt = await disk_format(path)
    if fmt not in ("qcow2", "raw"):
        raise LabError(f"{path} is {fmt}; give a qcow2 or raw image")
    return BootImage(disk=path, format=fmt)
