"""The lab and its all-in-one both create ``<prefix>fabric`` when a lab starts: the one whose
placeholder file (``/run/netns/<name>``) wins mounts the namespace on it, and the other one must
wait for that mount instead of entering a plain file (``setns``: EINVAL, an OSError that no
agent expects: the DHCP agent's task died and the all-in-one with it)."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from cloudmeta import linux
from cloudmeta.linux import netns

pytestmark = pytest.mark.root


async def test_the_second_creator_waits_for_the_first_ones_mount(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = secrets.token_hex(3)
    fabric, made = f"cmt-{tag}-fabric", f"cmt-{tag}-made"
    placeholder = netns.NETNS_DIR / fabric
    waited: list[float] = []

    def winner_mounts(timeout: float) -> None:
        """The first creator finishes (its mount lands) while the second one waits."""
        waited.append(timeout)
        if len(waited) == 1:
            linux.create_namespace(made)
            subprocess.run(["mount", "--bind", str(netns.NETNS_DIR / made), str(placeholder)])

    try:
        linux.create_namespace(made)  # /run/netns is a shared mount, as in a running lab
        linux.delete_namespace(made)
        placeholder.touch()  # the first creator between its O_EXCL open and its mount
        monkeypatch.setattr(netns, "_wait_mount_change", winner_mounts, raising=False)
        linux.create_namespace(fabric)
        await linux.create_bridge(fabric, f"cmt-{tag[:4]}br")  # enters it: a real namespace
        assert waited, "the second creator did not wait for the first one's mount"
        assert f"cmt-{tag[:4]}br" in {lk.name for lk in await linux.list_links(fabric)}
    finally:
        monkeypatch.undo()
        await linux.cleanup(namespaces=[fabric, made])
        placeholder.unlink(missing_ok=True)
