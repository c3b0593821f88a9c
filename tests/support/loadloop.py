"""Run INSIDE an instance namespace: the fixed request loop of the fault tests.

``python loadloop.py HOST PATH SECONDS INTERVAL TIMEOUT`` sends one GET at a time for SECONDS
and prints a JSON list of ``[wall_time, status, uuid, latency]`` (status 0: no answer within
TIMEOUT or refused; uuid: the ``uuid`` of a JSON 200 body, else null).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def once(host: str, path: str, timeout: float) -> tuple[int, str | None]:
    raw = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, 80), timeout=timeout) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0, None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, None
    uuid = None
    if status == 200:
        try:
            uuid = json.loads(body).get("uuid")
        except ValueError:
            uuid = "<not json>"
    return status, uuid


def main(host: str, path: str, seconds: float, interval: float, timeout: float) -> None:
    out = []
    end = time.time() + seconds
    while time.time() < end:
        start = time.time()
        status, uuid = once(host, path, timeout)
        out.append([start, status, uuid, time.time() - start])
        time.sleep(max(0.0, interval - (time.time() - start)))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
