"""The lab's pure parts: what cloud-init is told, the boot script, config passed to children."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmeta.config import Config
from cloudmeta.lab.bootscript import BOOT_STEPS, boot_script, ec2_hypervisor_uuid, instance_env
from cloudmeta.lab.childenv import config_env
from cloudmeta.lab.cloudcfg import Datasource, lab_cloud_cfg, lab_user_data
from cloudmeta.lab.repo import control_file


@pytest.mark.parametrize("ds", list(Datasource))
def test_cloud_cfg_lists_only_the_datasource_in_use(ds: Datasource) -> None:
    cfg = json.loads(lab_cloud_cfg(ds))
    assert cfg["datasource_list"] == [ds.value]
    assert cfg["datasource"][ds.value]["metadata_urls"] == ["http://169.254.169.254"]
    assert cfg["network"] == {"config": "disabled"}
    modules = cfg["cloud_init_modules"] + cfg["cloud_config_modules"] + cfg["cloud_final_modules"]
    for touches_host in ("growpart", "resizefs", "locale", "ntp", "disk_setup", "mounts"):
        assert touches_host not in modules
    for needed in ("set_hostname", "set-passwords", "apt-configure", "scripts-user"):
        assert needed in modules


def test_user_data_is_the_seeds_typical_uses() -> None:
    text = lab_user_data("lab-1-lab", "pw", "http://192.0.2.3/")
    assert text.startswith("#cloud-config\n")
    data = json.loads(text.split("\n", 1)[1])
    assert data["hostname"] == "lab-1-lab"
    assert data["password"] == "pw"
    assert data["packages"] == ["cmt-hello"]
    assert data["apt"]["sources_list"] == "deb [trusted=yes] http://192.0.2.3/ ./\n"
    assert "SourceParts" in data["apt"]["conf"]  # the host's mirrors are ignored
    assert "packages" not in json.loads(lab_user_data("x", "pw", None).split("\n", 1)[1])


def test_boot_script_records_every_step_and_mounts_its_own_filesystems() -> None:
    from pathlib import Path

    script = boot_script(Path("/var/lib/cloudmeta/lab/instances/a b"), "eth0")
    for step in BOOT_STEPS:
        assert f"step {step} " in script
    assert "D='/var/lib/cloudmeta/lab/instances/a b'" in script
    for mount in ("lowerdir=/,", "-t proc", "--rbind /dev", "-t sysfs", '"$R/run"', '"$R/tmp"'):
        assert mount in script
    assert "-pf /run/dhclient.pid" in script  # dhclient's files inside the overlay only
    assert instance_env(True)["product_name"] == "OpenStack Nova"
    assert "product_name" not in instance_env(False)


def test_an_ec2_instance_sees_an_ec2_hypervisor_uuid_in_its_own_sys() -> None:
    from pathlib import Path

    platform = ec2_hypervisor_uuid("6c3a9f0e-0000-4000-8000-00000000cafe")
    assert platform == "ec26c3a9f0e00004000800000000000cafe"  # cloud-init: startswith("ec2")
    script = boot_script(Path("/lab/i"), "eth0", hypervisor_uuid=platform)
    assert f'echo {platform} > "$R/sys/hypervisor/uuid"' in script
    assert 'mount -t tmpfs -o mode=0755 cmt-sys "$R/sys"' in script  # never the host's /sys
    plain = boot_script(Path("/lab/i"), "eth0")
    assert "hypervisor" not in plain and 'mount -t sysfs sysfs "$R/sys"' in plain


def test_config_env_gives_a_child_the_same_config(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(force_metadata=True, dnsmasq_dns_servers=["192.0.2.53"])
    for key, value in config_env(config).items():
        monkeypatch.setenv(key, value)
    again = Config()
    assert again.model_dump() == config.model_dump()
    assert again.metadata_proxy_shared_secret.get_secret_value() == "cmt-test-secret"
    assert "CLOUDMETA_STATE_PATH" in os.environ


def test_control_file_names_the_package() -> None:
    assert control_file().startswith("Package: cmt-hello\nVersion: 1.0\n")


def test_a_lab_runs_only_while_its_lab_up_process_does() -> None:
    import subprocess

    from cloudmeta.lab.cloud import lab_running
    from cloudmeta.lab.state import LabState

    assert not lab_running(LabState())
    assert not lab_running(LabState(owner_pid=os.getpid()))  # this process is the new `lab up`
    other = subprocess.Popen(["bash", "-c", 'exec -a "cloudmeta lab up" sleep 30'])
    plain = subprocess.Popen(["sleep", "30"])  # a recycled pid: alive, but not a `lab up`
    try:
        # Wait until bash has exec'd under its new name (a loaded machine takes its time).
        deadline = time.monotonic() + 10
        while b"cloudmeta lab up" not in Path(f"/proc/{other.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "bash never exec'd"
            time.sleep(0.01)
        assert lab_running(LabState(owner_pid=other.pid))
        assert not lab_running(LabState(owner_pid=plain.pid))
    finally:
        for proc in (other, plain):
            proc.kill()
            proc.wait()
    assert not lab_running(LabState(owner_pid=other.pid))


def test_two_writers_of_the_lab_record_keep_both_changes(
    make_config: Callable[..., Config],
) -> None:
    """``lab up`` and a ``lab boot`` (or two boots) change the record at the same time: the one
    that comes second waits and changes what the first one wrote, instead of writing its own
    old copy over it (a lost instance, then a lost teardown)."""
    import fcntl
    import threading

    from cloudmeta.lab.state import LabInstance, LabState, edit_state, load_state, save_state

    config = make_config()
    save_state(config, LabState(owner_pid=1))
    old_copy = load_state(config)  # what `lab up` holds in memory
    assert old_copy is not None
    first_in = threading.Event()
    release = threading.Event()
    seen: dict[str, set[str]] = {}

    def record(name: str, hold: bool) -> None:
        with edit_state(config) as current:
            seen[name] = set(current.instances)
            current.instances[name] = LabInstance(
                name=name, server_id=name, network_id="n", network="n", namespace=name, link=name
            )
            if hold:
                first_in.set()
                assert release.wait(10)

    boot = threading.Thread(target=record, args=("cmt-boot", True))
    boot.start()
    assert first_in.wait(10)
    probe = os.open(config.state_path / "lab" / "lab.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # held: a second writer waits for it
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(probe)
    up = threading.Thread(target=record, args=("cmt-up", False))
    up.start()
    release.set()
    boot.join(10)
    up.join(10)
    assert seen == {"cmt-boot": set(), "cmt-up": {"cmt-boot"}}
    final = load_state(config)
    assert final is not None and set(final.instances) == {"cmt-boot", "cmt-up"}
    with edit_state(config, old_copy):
        pass
    assert set(old_copy.instances) == {"cmt-boot", "cmt-up"}  # the caller's copy follows
