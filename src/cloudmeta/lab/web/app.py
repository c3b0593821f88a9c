"""The lab page's HTTP side: static pages, the snapshot as JSON, its event stream, documents.

The pages are static files; the script fills them from JSON with ``textContent`` only, so
nothing a user chose (a hostname, user data, a server name) is ever parsed as HTML. The
headers forbid inline script and framing, and a request must name the page's own address in
``Host`` (a DNS-rebinding site cannot read an instance's user data through the browser).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_sse import sse_response

from cloudmeta.lab.web.documents import Fetch
from cloudmeta.lab.web.live import LabView

__all__ = ["VIEW", "build_app"]

VIEW = web.AppKey("view", LabView)
_STATIC = resources.files("cloudmeta.lab.web") / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_FILES = {"lab.js", "lab.css"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _file(name: str) -> web.Response:
    suffix = name[name.rfind(".") :]
    text = (_STATIC / name).read_text()
    return web.Response(text=text, content_type=_TYPES[suffix], charset="utf-8")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, sort_keys=True))


async def _index(_: web.Request) -> web.Response:
    return _file("index.html")


async def _instance_page(_: web.Request) -> web.Response:
    return _file("instance.html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return _file(name)


async def _lab(request: web.Request) -> web.Response:
    return _json(request.app[VIEW].snapshot)


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the snapshot at once, then each newer one (``event: lab``), until
    the browser goes (the stream's pings find out) or the page stops (the stream then ends
    as a complete response)."""
    view = request.app[VIEW]
    version = 0
    async with sse_response(request) as stream:
        gone = asyncio.ensure_future(stream.wait())
        try:
            while True:
                newer = asyncio.ensure_future(view.wait_newer(version))
                await asyncio.wait({newer, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not newer.done():
                    newer.cancel()
                    break
                found = newer.result()
                if found is None:  # the page stops
                    break
                version, snapshot = found
                await stream.send(json.dumps(snapshot, sort_keys=True), event="lab")
        finally:
            gone.cancel()
    return stream


async def _documents(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = await request.app[VIEW].documents(name)
    if found is None:
        return _json({"error": {"message": f"no lab instance {name}"}}, status=404)
    return _json({"name": name, "documents": [_doc(f) for f in found]})


def _doc(fetch: Fetch) -> dict[str, Any]:
    return {**fetch.summary(), "body": fetch.body}


def _guard(hosts: set[str]) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.host not in hosts:
            raise web.HTTPMisdirectedRequest(text="this page answers on its own address only\n")
        response = await handler(request)
        response.headers.update(_HEADERS)
        return response

    return guard


def build_app(view: LabView, port: int) -> web.Application:
    """The page's application; ``port`` is the one it serves on (for the ``Host`` check)."""
    hosts = {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
    app = web.Application(middlewares=[_guard(hosts)])
    app[VIEW] = view
    app.router.add_get("/", _index)
    app.router.add_get("/instances/{name}", _instance_page)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/lab", _lab)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/instances/{name}/documents", _documents)
    return app
