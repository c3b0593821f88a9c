"""Run INSIDE an instance namespace (``python attacker.py`` with a JSON job on stdin): send raw
HTTP requests to the metadata address and judge each answer. Raw sockets, because the attacks
are malformed on purpose (repeated, folded, comma-joined headers) and clients would fix them.

Job: ``{"host", "port", "requests": [raw text], "count", "own": str, "forbidden": [str],
"threads", "timeout"}``. Each try sends ``requests[i % len]``. A leak is an answer containing a
forbidden string (another instance's id, name or project) that the request did not carry
itself, any 2xx holding one, or a 200 ``uuid`` that is not ``own``.
Prints ``{"tries", "leaks", "statuses", "timeouts", "examples", "per_request"}`` as JSON, where
``per_request[i]`` is ``{"tries", "leaks", "statuses"}`` of ``requests[i]``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections import Counter
from typing import Any


def exchange(host: str, port: int, raw: bytes, timeout: float) -> tuple[int, bytes]:
    """Send ``raw``, read to EOF: (status, body); status 0 if no answer in time."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return 0, b""
            if not data:
                break
            chunks.append(data)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = -1
    return status, body


def judge(status: int, body: bytes, own: str, forbidden: list[bytes], sent: bytes) -> str | None:
    """Why this answer is a leak, or None. An error page echoing what the attacker itself sent
    (a parser quoting the bad header) is not a leak; a 2xx holding it is."""
    for word in forbidden:
        if word in body and (200 <= status < 300 or word not in sent):
            return f"body holds {word.decode()!r}"
    if status == 200 and body.startswith(b"{"):
        try:
            uuid = json.loads(body).get("uuid")
        except ValueError:
            return None
        if uuid is not None and uuid != own:
            return f"uuid {uuid}"
    return None


def run(job: dict[str, Any]) -> dict[str, Any]:
    requests = [r.encode("latin-1") for r in job["requests"]]
    forbidden = [w.encode() for w in job["forbidden"]]
    count, threads = int(job["count"]), int(job.get("threads", 4))
    result: dict[str, Any] = {"tries": 0, "leaks": 0, "timeouts": 0, "examples": []}
    statuses: Counter[int] = Counter()
    per: list[dict[str, Any]] = [{"tries": 0, "leaks": 0, "statuses": Counter()} for _ in requests]
    lock = threading.Lock()
    counter = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            slot = index % len(requests)
            raw = requests[slot]
            try:
                status, body = exchange(job["host"], job["port"], raw, job.get("timeout", 5.0))
            except OSError:
                status, body = 0, b""
            why = judge(status, body, job["own"], forbidden, raw)
            with lock:
                result["tries"] += 1
                statuses[status] += 1
                result["timeouts"] += status == 0
                per[slot]["tries"] += 1
                per[slot]["statuses"][str(status)] += 1
                if why is not None:
                    result["leaks"] += 1
                    per[slot]["leaks"] += 1
                    if len(result["examples"]) < 5:
                        result["examples"].append({"request": raw.decode("latin-1"), "why": why})

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    result["per_request"] = [{**p, "statuses": dict(p["statuses"])} for p in per]
    return result


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
