"""What every admin API handler module shares: the route record, app keys, body parsing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from cloudmeta.http import RETRY_AFTER
from cloudmeta.inventory import Invalid, Store
from cloudmeta.inventory.agents import Scheduling

__all__ = [
    "SCHEDULING_KEY",
    "STORE_KEY",
    "Handler",
    "Route",
    "error_response",
    "parse_body",
    "store_of",
]

STORE_KEY = web.AppKey("store", Store)
SCHEDULING_KEY = web.AppKey("scheduling", Scheduling)
S = TypeVar("S", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None  # request schema, wrapped as {body_key: {...}}
    body_key: str | None = None
    answer: str | None = None  # key of the answer object; None: no body (204)
    query: tuple[str, ...] = ()


def error_response(status: int, message: str) -> web.Response:
    """The JSON error; a 503 (the inventory database away) says when to come back, as every
    cloudmeta 503 does (:data:`cloudmeta.http.RETRY_AFTER`)."""
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return web.json_response(
        {"error": {"code": status, "message": message}}, status=status, headers=headers
    )


def store_of(request: web.Request) -> Store:
    return request.app[STORE_KEY]


async def parse_body(request: web.Request, spec: type[S], key: str | None) -> S:
    """Parse the JSON body (``{key: {...}}`` when key is given) into ``spec``."""
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Invalid("body: malformed JSON") from None
    if key is not None:
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            raise Invalid(f"body: expected a JSON object {{{key!r}: {{...}}}}")
        data = data[key]
    try:
        return spec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        prefix = f"{key}." if key else ""
        raise Invalid(f"{prefix}{where}: {first['msg']}") from None
