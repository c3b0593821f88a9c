"""A lab instance boots for real (dhclient + cloud-init) and leaves the host as it was.

The metadata here is a static OpenStack tree served at 169.254.169.254 in a namespace next to
the instance, with dnsmasq pushing the route: the instance runtime alone, no cloudmeta service.
The end-to-end tests in test_lab_e2e.py go through the real path.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudmeta import linux
from cloudmeta.lab import instance, repo
from cloudmeta.lab.cloudcfg import DEFAULT_USER, MARKER_FILE, Datasource, lab_user_data
from cloudmeta.linux.cleanup import cleanup, namespace_pids

pytestmark = pytest.mark.root

_MAC = "fa:16:3e:00:00:10"
_INSTANCE_ID = "6c3a9f0e-0000-4000-8000-00000000cafe"


def _user_line(path: str, user: str) -> str | None:
    for line in Path(path).read_text().splitlines():
        if line.split(":", 1)[0] == user:
            return line
    return None


def _host_snapshot() -> dict[str, str]:
    """What the instance's cloud-init would change if it wrote to the host.

    Only its own traces: whole-file hashes of /etc/passwd or the apt dirs would also change
    when somebody installs a package on the host meanwhile (a ``make install`` that adds a
    system user), which says nothing about the instance.
    """
    import socket

    snap: dict[str, str] = {"hostname": socket.gethostname()}
    for name in ("/etc/hostname", "/etc/resolv.conf", "/etc/hosts"):
        path = Path(name)
        snap[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"
    for name in ("/etc/passwd", "/etc/shadow"):
        snap[f"{name}:{DEFAULT_USER}"] = repr(_user_line(name, DEFAULT_USER))
    for name in (f"/home/{DEFAULT_USER}", "/root/.ssh", MARKER_FILE):
        path = Path(name)
        snap[name] = (
            repr(sorted(str(p) for p in path.rglob("*")))
            if path.is_dir()
            else ("file" if path.exists() else "-")
        )
    cloud = Path("/var/lib/cloud")
    snap["cloud"] = repr(sorted(str(p) for p in cloud.rglob(f"*{_INSTANCE_ID}*")))
    sources = [p for p in Path("/etc/apt").rglob("*") if p.is_file()]
    snap["apt"] = repr(sorted(str(p) for p in sources if b"192.0.2.2" in p.read_bytes()))
    snap["dpkg"] = repr(b"Package: cmt-hello\n" in Path("/var/lib/dpkg/status").read_bytes())
    return snap


def _metadata_tree(root: Path, user_data: str) -> None:
    meta = {
        "uuid": _INSTANCE_ID,
        "name": "cmt-static",
        "hostname": "cmt-static",
        "launch_index": 0,
        "availability_zone": "nova",
        "project_id": "cmt-project",
    }
    for version in ("latest", "2012-08-10"):
        folder = root / "openstack" / version
        folder.mkdir(parents=True)
        (folder / "meta_data.json").write_text(json.dumps(meta))
        (folder / "user_data").write_text(user_data)
        (folder / "vendor_data.json").write_text("{}")
        (folder / "network_data.json").write_text("{}")


@pytest.fixture
async def static_cloud(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    tag = secrets.token_hex(3)
    vm, md, link = f"cmt-{tag}-vm", f"cmt-{tag}-md", f"cmt-{tag}-md0"
    try:
        linux.create_namespace(vm)
        linux.create_namespace(md)
        await linux.set_link(vm, "lo", up=True)
        await linux.set_link(md, "lo", up=True)
        await linux.plug_veth(vm, "eth0", mac=_MAC, host_ifname=link, bridge_namespace=md)
        await linux.add_address(md, link, "192.0.2.2/24")
        await linux.add_address(md, link, "169.254.169.254/32")
        await repo.build_repository(tmp_path / "lab" / "repo")
        repo.start_server(md, "192.0.2.2", tmp_path / "lab" / "repo", tmp_path / "repo.log")
        _metadata_tree(tmp_path / "md", lab_user_data("cmt-static-lab", "pw", "http://192.0.2.2/"))
        linux.spawn(
            [
                sys.executable,
                "-m",
                "http.server",
                "80",
                "--bind",
                "169.254.169.254",
                "--directory",
                str(tmp_path / "md"),
            ],
            namespace=md,
            log_path=tmp_path / "md.log",
        )
        linux.spawn(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--port=0",
                f"--interface={link}",
                "--bind-interfaces",
                "--dhcp-range=192.0.2.0,static,255.255.255.0",
                f"--dhcp-host={_MAC},192.0.2.10,cmt-static",
                "--dhcp-option=option:classless-static-route,169.254.169.254/32,192.0.2.2",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
                "--pid-file=",
            ],
            namespace=md,
            log_path=tmp_path / "dnsmasq.log",
        )
        await repo.wait_serving(md, "192.0.2.2")
        yield vm, tmp_path / "instances"
    finally:
        await instance.kill(instance.InstancePaths(tmp_path / "instances" / "cmt-static"))
        await cleanup(namespaces=[vm, md])


async def test_instance_boots_with_real_cloud_init_and_host_is_unchanged(
    static_cloud: tuple[str, Path],
) -> None:
    namespace, base = static_cloud
    before = _host_snapshot()
    paths = instance.InstancePaths(base / "cmt-static")
    instance.start(paths, namespace, "eth0", Datasource.OPENSTACK)
    status = await instance.wait_booted(paths, timeout=120)
    facts = await instance.facts(paths)
    assert status == "ok", (paths.console.read_text()[-3000:], facts)
    assert facts.result == "ok"
    assert facts.hostname == "cmt-static-lab"
    assert facts.password_set
    assert facts.package == "cmt-hello 1.0"
    assert facts.datasource and "DataSourceOpenStack" in facts.datasource
    assert (paths.upper / MARKER_FILE.lstrip("/")).read_text().strip() == "cmt-static-lab"
    assert (paths.upper / "var/lib/cloud/data/result.json").exists()
    # Everything cloud-init wrote is in the upper dir: the host is as it was.
    assert _host_snapshot() == before
    await instance.kill(paths)
    assert not paths.dir.exists()
    assert namespace_pids(namespace) == []


async def test_a_host_dpkg_transaction_does_not_stop_the_instances_apt(
    static_cloud: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay's lower layer is the live host: while the host installs packages, dpkg's
    journal sits in ``/var/lib/dpkg/updates`` and an instance that sees it stops at "dpkg was
    interrupted" (``apt-get install cmt-hello`` exit 100). The journal is put where the
    instance's view would show it (its upper dir), never into the host's own dpkg."""
    namespace, base = static_cloud
    real_spawn = instance.spawn

    def spawn_mid_transaction(cmd: list[str], **kwargs: Any) -> Any:
        updates = kwargs["log_path"].parent / "upper" / "var" / "lib" / "dpkg" / "updates"
        updates.mkdir(parents=True, exist_ok=True)
        (updates / "0001").write_text("Package: cmt-host-installing\nStatus: install ok unpacked\n")
        return real_spawn(cmd, **kwargs)

    monkeypatch.setattr(instance, "spawn", spawn_mid_transaction)
    paths = instance.InstancePaths(base / "cmt-static")
    instance.start(paths, namespace, "eth0", Datasource.OPENSTACK)
    status = await instance.wait_booted(paths, timeout=120)
    facts = await instance.facts(paths)
    output = paths.upper / "var/log/cloud-init-output.log"
    assert facts.package == "cmt-hello 1.0", output.read_text()[-2000:]
    assert status == "ok", facts
