"""An instance's metadata documents as the instance itself gets them.

``curl`` runs inside the instance (its network, mount and pid namespaces, as ``lab exec``
does), so each request takes the instance's real path: its route to 169.254.169.254, the
proxy in its network's qdhcp- or qrouter- namespace, the agent, the metadata API. Each fetch
is also what the page lists as the instance's recent requests: the API's hot path logs no
line per request, so these are the requests the lab can see without touching it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, replace

from cloudmeta.lab import instance
from cloudmeta.lab.cloudcfg import Datasource
from cloudmeta.lab.errors import LabError
from cloudmeta.linux import LinuxError, run

__all__ = ["RECENT", "Fetch", "RecentRequests", "document_paths", "fetch_documents", "parse_curl"]

BASE = "http://169.254.169.254"
RECENT = 30  # requests kept per instance
_MARK = "\n@@cmt@@ "
_OPENSTACK = [
    "/openstack/latest/meta_data.json",
    "/openstack/latest/network_data.json",
    "/openstack/latest/vendor_data2.json",
    "/openstack/latest/user_data",
]
_EC2 = [
    "/latest/meta-data/instance-id",
    "/latest/meta-data/local-ipv4",
    "/latest/dynamic/instance-identity/document",
    "/latest/user-data",
]
_TOKEN = "/latest/api/token"


@dataclass(frozen=True, slots=True)
class Fetch:
    """One request made from inside the instance, and its answer."""

    at: float
    method: str
    path: str
    status: int  # 0: no HTTP answer (curl failed)
    milliseconds: float
    size: int
    body: str

    def summary(self) -> dict[str, object]:
        """The request without its body, for the list of recent requests."""
        found = asdict(self)
        del found["body"]
        return found


class RecentRequests:
    """The last :data:`RECENT` fetches of each instance."""

    def __init__(self) -> None:
        self._by_name: dict[str, deque[Fetch]] = {}

    def add(self, name: str, fetch: Fetch) -> None:
        self._by_name.setdefault(name, deque(maxlen=RECENT)).append(fetch)

    def of(self, name: str) -> list[dict[str, object]]:
        return [f.summary() for f in reversed(self._by_name.get(name, ()))]

    def forget(self, name: str) -> None:
        self._by_name.pop(name, None)


def document_paths(datasource: str) -> list[str]:
    return _EC2 if datasource == Datasource.EC2.value else _OPENSTACK


def _curl(path: str, method: str, headers: dict[str, str]) -> list[str]:
    written = f"{_MARK}%{{http_code}} %{{time_total}} %{{size_download}}"
    argv = ["curl", "-sS", "--max-time", "5", "-X", method, "-w", written]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    return [*argv, f"{BASE}{path}"]


def parse_curl(path: str, method: str, at: float, out: str, err: str) -> Fetch:
    """A :class:`Fetch` from curl's output (the body, then the ``-w`` line after the mark)."""
    body, mark, tail = out.rpartition(_MARK)
    if not mark:
        return Fetch(at, method, path, 0, 0.0, 0, err.strip() or out)
    code, seconds, size = [*tail.split(), "0", "0", "0"][:3]
    return Fetch(at, method, path, int(code), round(float(seconds) * 1000, 1), int(size), body)


async def _fetch(
    paths: instance.InstancePaths, path: str, method: str = "GET", **headers: str
) -> Fetch:
    at = time.time()
    try:
        argv = instance.exec_argv(paths, _curl(path, method, headers))
        done = await run(argv, timeout=10, check=False)
    except (LinuxError, LabError) as exc:
        return Fetch(at, method, path, 0, 0.0, 0, str(exc))
    return parse_curl(path, method, at, done.stdout, done.stderr)


async def fetch_documents(paths: instance.InstancePaths, datasource: str) -> list[Fetch]:
    """Each document of the instance's datasource, fetched in turn from inside it (EC2 asks
    for an IMDSv2 token first, as cloud-init does)."""
    headers: dict[str, str] = {}
    found = []
    if datasource == Datasource.EC2.value:
        token = await _fetch(paths, _TOKEN, "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        if token.status == 200:
            headers["X-aws-ec2-metadata-token"] = token.body.strip()
            token = replace(token, body=f"(a token of {token.size} bytes, not shown)")
        found.append(token)
    for path in document_paths(datasource):
        found.append(await _fetch(paths, path, **headers))
    return found
