"""The lab's apt repository: a tiny package built with ``dpkg-deb``, indexed, served per network.

Instances cannot reach the host's mirrors (nothing leaves the machine), so the "install
software" use of cloud-init needs a repository on the lab network itself. The lab builds one
flat repository (``deb [trusted=yes] http://<ip>/ ./``) once and serves it from a small HTTP
server in a namespace on each lab network, at the address of a port the inventory gave it.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path

from cloudmeta.lab.errors import LabError
from cloudmeta.linux import LinuxError, run, spawn

__all__ = [
    "PACKAGE",
    "PACKAGE_VERSION",
    "build_repository",
    "control_file",
    "start_server",
    "wait_serving",
]

PACKAGE = "cmt-hello"
PACKAGE_VERSION = "1.0"


def control_file(package: str = PACKAGE, version: str = PACKAGE_VERSION) -> str:
    return (
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: cloudmeta lab <lab@example.org>\nSection: misc\nPriority: optional\n"
        "Description: cloudmeta lab demo package\n"
        " Installed by cloud-init's packages module from the lab's own apt repository.\n"
    )


def _hello_script(package: str, version: str) -> str:
    return f'#!/bin/sh\necho "{package} {version}"\n'


def _write_package_tree(repo_dir: Path) -> Path:
    """The package's files as ``dpkg-deb --build`` wants them; returns the tree's root."""
    build = repo_dir.parent / "pkgroot"
    (build / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (build / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    (build / "DEBIAN" / "control").write_text(control_file())
    binary = build / "usr" / "bin" / PACKAGE
    binary.write_text(_hello_script(PACKAGE, PACKAGE_VERSION))
    binary.chmod(0o755)
    repo_dir.mkdir(parents=True, exist_ok=True)
    return build


async def build_repository(repo_dir: Path) -> Path:
    """Build ``cmt-hello`` and its ``Packages`` index in ``repo_dir`` (idempotent)."""
    index = repo_dir / "Packages"
    if index.exists():
        return repo_dir
    build = await asyncio.to_thread(_write_package_tree, repo_dir)
    deb = repo_dir / f"{PACKAGE}_{PACKAGE_VERSION}_all.deb"
    try:
        await run(["dpkg-deb", "--root-owner-group", "--build", str(build), str(deb)])
        # dpkg-scanpackages indexes paths relative to where it runs: the repository itself.
        scan = f"cd {shlex.quote(str(repo_dir))} && dpkg-scanpackages --multiversion ."
        scanned = await run(["sh", "-c", scan])
    except LinuxError as exc:
        raise LabError(f"cannot build the lab's apt repository: {exc}") from exc
    tmp = index.with_suffix(".tmp")
    tmp.write_text(scanned.stdout)
    tmp.rename(index)
    return repo_dir


def start_server(namespace: str, address: str, repo_dir: Path, log_path: Path) -> int:
    """Serve ``repo_dir`` on ``address``:80 inside ``namespace``; return the server's pid."""
    proc: subprocess.Popen[bytes] = spawn(
        [
            sys.executable,
            "-m",
            "http.server",
            "80",
            "--bind",
            address,
            "--directory",
            str(repo_dir),
        ],
        namespace=namespace,
        log_path=log_path,
    )
    return proc.pid


async def wait_serving(namespace: str, address: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until the repository answers inside ``namespace``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = await run(
            ["curl", "-fsS", "-o", "/dev/null", "--max-time", "1", f"http://{address}/Packages"],
            namespace=namespace,
            check=False,
        )
        if result.returncode == 0:
            return
        await asyncio.sleep(0.2)
    raise LabError(f"the lab's apt repository at {address} in {namespace} does not answer")
