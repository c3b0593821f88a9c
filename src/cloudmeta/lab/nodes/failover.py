"""Measure what losing a node costs metadata: every instance reads its ``meta_data.json`` in a
loop while the node is killed (``kill -9`` of all its processes, its namespaces deleted).

Used by the multi-node test and the ``node-loss`` bench scenario, so both measure the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cloudmeta.config import Config
from cloudmeta.lab import instance
from cloudmeta.lab.nodes.hosts import kill_node
from cloudmeta.lab.state import LabState, lab_dir

__all__ = ["FailoverResult", "node_loss", "summarize"]

_INTERVAL = 0.1
# Inside an instance: one line per request, "<time> ok <uuid>" or "<time> err <why>".
_LOOP = f"""
import json, sys, time, urllib.request
end = time.time() + float(sys.argv[1])
while time.time() < end:
    t = time.time()
    try:
        url = "http://169.254.169.254/openstack/latest/meta_data.json"
        with urllib.request.urlopen(url, timeout=1) as r:
            print(f"{{t:.3f}} ok {{json.load(r)['uuid']}}", flush=True)
    except Exception as e:
        why = type(getattr(e, "reason", None) or e).__name__
        print(f"{{t:.3f}} err {{why}}", flush=True)
    time.sleep({_INTERVAL})
"""


@dataclass(frozen=True, slots=True)
class FailoverResult:
    """Requests after the loss, per instance; what failed; whether any document was wrong."""

    node: str
    lost_at: float
    requests: dict[str, int]  # instance -> requests sent after the loss
    failures: int  # failed requests after the loss, all instances
    wrong: int  # answers with another instance's document (ever)
    failover_seconds: float  # loss -> last failed request (0.0 when none failed)
    late: list[str] = field(default_factory=list)  # failures more than ``bound`` s after
    reasons: dict[str, int] = field(default_factory=dict)  # why requests failed: how many


def _parse(text: str) -> list[tuple[float, bool, str]]:
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("ok", "err"):
            found.append((float(parts[0]), parts[1] == "ok", parts[2] if len(parts) > 2 else ""))
    return found


async def node_loss(
    config: Config,
    state: LabState,
    node: str,
    *,
    seconds: float = 12.0,
    kill_after: float = 3.0,
    bound: float = 5.0,
) -> FailoverResult:
    """Loop on every namespace instance for ``seconds``; kill ``node`` after ``kill_after``.
    The instances' clock is the host's (one kernel), so their times compare with the loss's."""
    insts = [i for i in state.instances.values() if not i.vm]
    procs = {}
    for inst in insts:
        paths = instance.InstancePaths(lab_dir(config) / "instances" / inst.name)
        argv = instance.exec_argv(paths, ["python3", "-c", _LOOP, str(seconds)])
        procs[inst.name] = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE
        )
    try:
        await asyncio.sleep(kill_after)
        lost_at = await kill_node(config, state, node)
        outputs = {n: (await p.communicate())[0].decode() for n, p in procs.items()}
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    own = {i.name: i.server_id for i in insts}
    return summarize(node, lost_at, outputs, own, bound)


def summarize(
    node: str, lost_at: float, outputs: dict[str, str], own: dict[str, str], bound: float
) -> FailoverResult:
    """The loops' lines (instance -> output) read against the loss at ``lost_at``; ``own`` is
    each instance's server id, the only document it may ever get."""
    requests: dict[str, int] = {}
    failures, wrong, last = 0, 0, 0.0
    late: list[str] = []
    reasons: dict[str, int] = {}
    for name, text in outputs.items():
        results = _parse(text)
        wrong += sum(1 for _, ok, uuid in results if ok and uuid != own[name])
        after = [r for r in results if r[0] > lost_at]
        requests[name] = len(after)
        for t, ok, why in after:
            if not ok:
                failures += 1
                reasons[why] = reasons.get(why, 0) + 1
                last = max(last, t - lost_at)
                if t - lost_at > bound:
                    late.append(f"{name} at +{t - lost_at:.1f} s: {why}")
    return FailoverResult(node, lost_at, requests, failures, wrong, round(last, 2), late, reasons)
