"""Run INSIDE a namespace: one keep-alive GET, then ``idle`` (read to EOF), ``trickle`` (half
a second head, read to EOF) or ``again`` (a whole second request); ``behind`` sends half a
second head in the GET's own packet. Prints the first line of what came after the first
response (``EOF`` for nothing) and the seconds it took."""

from __future__ import annotations

import socket
import sys
import time

FIRST = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _first_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")).split(
            b":", 1
        )[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return body[length:]


def main(host: str, port: int, mode: str) -> None:
    with socket.create_connection((host, port), timeout=20) as sock:
        began = time.monotonic()
        sock.sendall(FIRST + SECOND[:20] if mode == "behind" else FIRST)
        rest = _first_response(sock)
        if mode != "behind":
            began = time.monotonic()
        if mode == "trickle":
            sock.sendall(SECOND[:20])
        elif mode == "again":
            sock.sendall(SECOND)
        while chunk := sock.recv(65536):
            rest += chunk
    line = rest.split(b"\r\n", 1)[0].decode() if rest else "EOF"
    print(f"{line}|{time.monotonic() - began:.3f}|{b'hello /second' in rest}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
