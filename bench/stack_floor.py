"""The serving stack's own floor, for the ``api-floor`` row: ``python -m bench.stack_floor
PORT BODY`` serves the file ``BODY`` on 127.0.0.1:PORT through cloudmeta's one serving stack
(:func:`cloudmeta.http.serve`: head gate, quiet aiohttp server, the pre-serialised cached
answer) from a handler that does nothing else, under uvloop like ``cloudmeta api``. Started
once per API process (``SO_REUSEPORT``), it is what the metadata API could reach if its own
work (identity, cache, seed, metrics) cost nothing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from cloudmeta.documents.paths import JSON
from cloudmeta.http import Limits, WireHead, serve, tcp_sockets


async def _serve(port: int, body: bytes) -> None:
    head = WireHead({"Content-Type": JSON, "ETag": 'W/"cmt-floor"'})

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return head.reply(request, body)

    listener = await serve(tcp_sockets("127.0.0.1", port, reuse_port=True), answer, Limits())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await listener.close(1)


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    uvloop.run(_serve(port, body))


if __name__ == "__main__":
    main()
