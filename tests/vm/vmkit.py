"""Helpers of the QEMU guest tests: a lab config of their own, the guest agent, the console,
and the check that a VM lab left no QEMU, tap, namespace or overlay behind."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudmeta.config import Config
from cloudmeta.lab import cloud
from cloudmeta.lab.vm import driver
from cloudmeta.linux import list_namespaces
from support.cli import free_port


def lab_config(make_config: Callable[..., Config], **extra: Any) -> Config:
    """An all-in-one of its own: free ports, ``cmt-<hex>-`` namespaces, ``cmt-NN`` links."""
    admin, metadata = free_port(), free_port()
    fields: dict[str, Any] = {
        "namespace_prefix": f"cmt-{secrets.token_hex(3)}-",
        "device_prefix": f"cmt-{secrets.randbelow(90) + 10}",
        "admin": {"listen": "127.0.0.1", "port": admin},
        "admin_url": f"http://127.0.0.1:{admin}",
        "api": {"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        "nova_metadata_port": metadata,
        "enable_isolated_metadata": True,
    }
    return make_config(**{**fields, **extra})


def qemu_pids_under(path: Path) -> list[int]:
    """QEMU processes whose command line names a file under ``path``."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "qemu-system" in cmd and str(path) in cmd:
                found.append(int(pid))
    return found


def assert_nothing_left(config: Config) -> None:
    """No QEMU, tap, namespace, overlay or file of the lab."""
    assert qemu_pids_under(config.state_path) == []
    assert list_namespaces(config.namespace_prefix) == []
    assert [n for n in os.listdir("/sys/class/net") if n.startswith(config.device_prefix)] == []
    assert not (config.state_path / "lab").exists()
    assert list(config.state_path.rglob("*.qcow2")) == []


async def guest_exec(config: Config, name: str, *argv: str) -> str:
    """Run ``argv`` in guest ``name`` through its guest agent; its stdout (exit 0 asserted)."""
    done = await driver.exec_in(cloud.instance_paths(config, name).dir, argv)
    assert done.exitcode == 0, (argv, done.stdout, done.stderr)
    return done.stdout.decode()


async def wait_agent(config: Config, name: str) -> None:
    """The guest agent starts with the guest's udev; by cloud-init's end it answers."""
    for _ in range(60):
        try:
            await guest_exec(config, name, "true")
            return
        except Exception:
            await asyncio.sleep(1)
    await guest_exec(config, name, "true")


def console_tail(config: Config, name: str, size: int = 4000) -> str:
    """The end of guest ``name``'s serial console, for a failure message."""
    log = cloud.instance_paths(config, name).dir / driver.CONSOLE
    return log.read_text(errors="replace")[-size:] if log.exists() else "(no console log)"
