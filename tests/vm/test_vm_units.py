"""The VM pieces without root: QEMU's command line, the recipe hash and the image cache, the KVM
decision and its memory, the serial console's boot report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from cloudmeta.lab.vm import accel, console, driver, image
from cloudmeta.lab.vm.guest import REPORT_MARKER
from cloudmeta.linux import qemu

_UUID = "6f1c2b6e-4a7e-4c55-9d0c-1b5f3a1e2d33"


def _vm_argv(tmp_path: Path, **overrides: Any) -> list[str]:
    boot = image.BootImage(
        disk=tmp_path / "disk.raw",
        format="raw",
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        append="root=/dev/vda rw console=ttyS0",
    )
    values: dict[str, Any] = {
        "name": "cmt-vm",
        "server_id": _UUID,
        "image": boot,
        "accel": accel.Accel(False, "test"),
        "tap": "cmt-tap1234",
        "mac": "fa:16:3e:00:00:01",
    }
    values.update(overrides)
    return qemu.machine_argv(driver.machine(tmp_path / "inst", **values))


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_argv_sets_novas_smbios_the_uuid_and_the_ports_mac_on_the_tap(tmp_path: Path) -> None:
    argv = _vm_argv(tmp_path)
    assert _option(argv, "-uuid") == [_UUID]
    assert _option(argv, "-smbios") == [
        "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,"
        f"serial={_UUID},uuid={_UUID},family=Virtual Machine"
    ]
    assert _option(argv, "-netdev") == ["tap,id=net0,ifname=cmt-tap1234,script=no,downscript=no"]
    assert "virtio-net-pci,netdev=net0,mac=fa:16:3e:00:00:01" in _option(argv, "-device")
    assert _option(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert _option(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert _option(argv, "-append") == ["root=/dev/vda rw console=ttyS0"]
    # The overlay, never the cached image, is the guest's disk.
    drives = _option(argv, "-drive")
    assert drives == [
        f"file={tmp_path / 'inst' / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe"
    ]
    assert _option(argv, "-serial") == ["file:console.log"]
    assert "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" in _option(argv, "-device")
    assert "-no-reboot" in argv


def test_argv_accelerator_follows_the_decision(tmp_path: Path) -> None:
    tcg = _vm_argv(tmp_path)
    assert _option(tcg, "-accel") == ["tcg,tb-size=128"] and _option(tcg, "-cpu") == ["max"]
    kvm = _vm_argv(tmp_path, accel=accel.Accel(True, "probed"))
    assert _option(kvm, "-accel") == ["kvm"] and _option(kvm, "-cpu") == ["host"]


def test_argv_user_image_boots_through_firmware_and_cdrom_is_attached(tmp_path: Path) -> None:
    user = image.BootImage(disk=tmp_path / "cloud.qcow2", format="qcow2")
    iso = tmp_path / "config,drive.iso"
    argv = _vm_argv(tmp_path, image=user, cdrom=iso)
    assert "-kernel" not in argv and "-append" not in argv
    # A comma in a path is doubled, as QEMU's option syntax wants.
    cdrom = f"file={tmp_path}/config,,drive.iso,media=cdrom,if=ide,readonly=on,format=raw"
    assert cdrom in _option(argv, "-drive")


def test_smbios_values_escape_commas() -> None:
    assert qemu.smbios_arg(1, {"product": "a,b"}) == "type=1,product=a,,b"


def test_recipe_hash_is_stable_and_follows_every_part_of_the_recipe() -> None:
    base = image.RECIPE
    assert base.digest() == dataclasses.replace(base).digest()
    changed = [
        dataclasses.replace(base, packages=(*base.packages, "vim")),
        dataclasses.replace(base, files={**base.files, "/etc/motd": "hi\n"}),
        dataclasses.replace(base, append=base.append + " quiet"),
        dataclasses.replace(base, disk_size="3G"),
    ]
    assert len({base.digest(), *(r.digest() for r in changed)}) == 1 + len(changed)


def test_recipe_forces_nothing_on_cloud_init_and_carries_no_host_identity() -> None:
    assert not [p for p in image.RECIPE.files if p.startswith("/etc/cloud")]
    assert "/etc/resolv.conf" in image.RECIPE.remove
    assert "/etc/ssh/ssh_host_*" in image.RECIPE.remove
    assert image.RECIPE.files["/etc/machine-id"] == ""
    assert image.RECIPE.files["/etc/default/locale"] == "LANG=C.UTF-8\n"


def _fake_image(cache: Path, recipe: image.Recipe, kernel: bytes = b"kernel") -> Path:
    path = cache / f"{recipe.name}-{recipe.digest()[:12]}"
    path.mkdir(parents=True)
    for name, content in (("disk.raw", b"x" * 4096), ("vmlinuz", kernel), ("initrd.img", b"i")):
        (path / name).write_bytes(content)
    meta = {"name": recipe.name, "recipe_hash": recipe.digest(), "created": 1.0, "append": "a"}
    (path / "image.json").write_text(json.dumps(meta))
    return path


async def test_cache_returns_the_built_image_without_rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def fake_bootstrap(suite: str, root: Path, *_: Any, **__: Any) -> None:
        calls.append(suite)
        raise RuntimeError("no network in this test")

    monkeypatch.setattr(image, "bootstrap", fake_bootstrap)
    _fake_image(tmp_path, image.RECIPE)
    found = await image.build_image(tmp_path)
    assert found.recipe_hash == image.RECIPE.digest() and calls == []
    assert [i.recipe_hash for i in image.list_images(tmp_path)] == [image.RECIPE.digest()]
    # A new recipe is not in the cache: it is built (and a failed build leaves no debris).
    other = dataclasses.replace(image.RECIPE, disk_size="3G")
    assert image.cached_image(tmp_path, other) is None
    with pytest.raises(RuntimeError):
        await image.build_image(tmp_path, other)
    assert calls == ["bookworm"]
    assert not list(tmp_path.glob(".build-*"))  # noqa: ASYNC240
    with pytest.raises(RuntimeError):  # --force rebuilds even a cached recipe
        await image.build_image(tmp_path, force=True)
    assert calls == ["bookworm", "bookworm"]
    assert image.cached_image(tmp_path) is not None  # the old build survives a failed rebuild


def test_kvm_decision() -> None:
    assert accel.decide(False, None) == accel.Accel(False, "no usable /dev/kvm")
    assert accel.decide(True, True).kvm is True
    failed = accel.decide(True, False, "failed to set MSR 0x10a")
    assert failed.kvm is False and "MSR 0x10a" in failed.reason
    assert accel.describe(failed).startswith("accelerator: TCG")
    assert accel.describe(accel.decide(True, True)).startswith("accelerator: KVM")


async def test_kvm_probe_runs_once_per_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[Path] = []

    async def fake_probe(img: image.CachedImage, workdir: Path) -> tuple[bool, str]:
        probes.append(img.dir)
        return False, "emulation failure"

    monkeypatch.setattr(accel, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(accel, "_probe", fake_probe)
    _fake_image(tmp_path, image.RECIPE)
    built = image.cached_image(tmp_path)
    assert built is not None
    first = await accel.accelerator(tmp_path, built)
    second = await accel.accelerator(tmp_path, built)
    assert first == second and first.kvm is False and len(probes) == 1
    # A new kernel (a new recipe with another kernel) is probed again.
    other = dataclasses.replace(image.RECIPE, disk_size="3G")
    _fake_image(tmp_path, other, kernel=b"another kernel")
    newer = image.cached_image(tmp_path, other)
    assert newer is not None
    await accel.accelerator(tmp_path, newer)
    assert len(probes) == 2
    # Without a usable device there is nothing to probe.
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: False)
    assert (await accel.accelerator(tmp_path, newer)).reason == "no usable /dev/kvm"
    assert len(probes) == 2


def _report(**fields: Any) -> str:
    data = {
        "hostname": "cmt-1-lab",
        "ips": ["192.0.2.4"],
        "metadata_via": "192.0.2.2",
        "password_set": True,
        "packages": {"cmt-hello": "1.0"},
        "datasource": "DataSourceOpenStackLocal [net,ver=2]",
        "errors": [],
        "cloud_init_ran": True,
        "final_finished": 1050.5,
    }
    data.update(fields)
    return f"{REPORT_MARKER} {json.dumps(data)}"


def test_console_report_is_the_last_complete_line() -> None:
    text = "\n".join(
        [
            "[  1.0] kernel",
            _report(hostname="old"),
            f"{REPORT_MARKER} {{broken",
            _report(hostname="new") + "\r",
            f'{REPORT_MARKER} {{"half',  # still being written
        ]
    )
    found = console.parse_report(text)
    assert found is not None and found["hostname"] == "new"
    assert console.parse_report("no report here") is None


def test_console_boot_stage() -> None:
    assert console.boot_stage("") is None
    assert console.boot_stage("[ 0.1] Linux version") == "kernel"
    text = (
        "cloud-init[1]: Cloud-init v. 22.4.2 running 'init-local' at Thu\n"
        "cloud-init[2]: Cloud-init v. 22.4.2 running 'modules:final' at Thu\n"
    )
    assert console.boot_stage(text) == "final"
    assert console.boot_stage(text + "Cloud-init v. 22.4.2 finished at Thu") == "finished"


def test_vm_facts_from_the_report(tmp_path: Path) -> None:
    (tmp_path / "started").write_text("1000.0\n")
    (tmp_path / driver.CONSOLE).write_text("boot\n" + _report() + "\n")
    facts = driver.facts(tmp_path, "cmt-hello")
    assert facts.result == "ok" and facts.errors == []
    assert facts.hostname == "cmt-1-lab" and facts.password_set is True
    assert facts.package == "cmt-hello 1.0" and facts.metadata_next_hop == "192.0.2.2"
    assert facts.boot_seconds == 50.5
    assert driver.status(tmp_path) == "ok"


def test_vm_facts_say_what_failed(tmp_path: Path) -> None:
    (tmp_path / driver.CONSOLE).write_text(_report(errors=["apt failed"], packages={}) + "\n")
    facts = driver.facts(tmp_path, "cmt-hello")
    assert facts.result == "failed" and facts.errors == ["apt failed"] and facts.package is None
    (tmp_path / driver.CONSOLE).write_text(_report(cloud_init_ran=False, final_finished=None))
    assert "cloud-init did not run" in driver.facts(tmp_path, "cmt-hello").errors[0]
    # cloud-init's fallback reports no error, yet read no metadata: a failed boot.
    (tmp_path / driver.CONSOLE).write_text(
        _report(datasource="DataSourceNone", hostname="localhost")
    )
    fallback = driver.facts(tmp_path, "cmt-hello")
    assert fallback.result == "failed" and "DataSourceNone" in fallback.errors[0]
    # No report and no QEMU: a failed boot, not one that is still booting.
    (tmp_path / driver.CONSOLE).write_text("[ 1.0] Kernel panic\n")
    assert driver.facts(tmp_path, "cmt-hello").result == "failed"
    assert asyncio.run(driver.wait_booted(tmp_path, timeout=5)) == "failed"


def test_an_ec2_guest_gets_the_dmi_cloud_init_identifies_aws_by(tmp_path: Path) -> None:
    argv = _vm_argv(tmp_path, ec2=True)
    uuid = "ec2" + _UUID[3:]
    assert _option(argv, "-uuid") == [uuid]
    smbios = _option(argv, "-smbios")[0]
    # ds-identify: product uuid and serial both start with "ec2" and are equal -> AWS.
    assert f"serial={uuid}," in smbios and smbios.endswith(f"uuid={uuid}")
    assert "OpenStack" not in smbios


def test_a_failed_build_with_a_mount_left_inside_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rmtree through a mounted /dev or /sys would delete the host's files: refuse instead."""
    work = tmp_path / ".build-x"
    (work / "root" / "dev").mkdir(parents=True)
    monkeypatch.setattr(image, "mounts_under", lambda path: [str(path / "root" / "dev")])
    with pytest.raises(image.LabError, match="still mounted"):
        image._remove_build(work)
    assert (work / "root" / "dev").is_dir()
    monkeypatch.setattr(image, "mounts_under", lambda path: [])
    image._remove_build(work)
    assert not work.exists()
