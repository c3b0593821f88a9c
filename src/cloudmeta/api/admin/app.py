"""The admin API application: bearer-token auth, JSON errors, and the route table.

Every failure a client can cause becomes ``{"error": {"code": N, "message": "..."}}`` with a
4xx status; anything unexpected is logged with its traceback and answered with a bare 500 that
reveals nothing.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from cloudmeta.api.admin.handlers import ROUTES, STORE_KEY, error_response
from cloudmeta.api.admin.openapi import openapi_document
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError, Store
from cloudmeta.logs import get_logger

__all__ = ["build_admin_app", "ensure_admin_token"]

_log = get_logger("admin-api")
_PUBLIC_PATHS = frozenset({"/openapi.json"})
# A request body larger than this is refused before parsing (user_data is at most 64 KiB).
MAX_BODY = 1024 * 1024
# Ids in the path and query values reach SQL; PostgreSQL refuses NUL in text (a DataError).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def ensure_admin_token(config: Config) -> str:
    """The configured token, else the one in ``<state_path>/admin_token`` (made once, 0600)."""
    if config.admin_token is not None and config.admin_token.get_secret_value():
        return config.admin_token.get_secret_value()
    path: Path = config.admin_token_file
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it between our read and our create
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    _log.info("generated admin token", path=str(path))
    return token


def _middlewares(token: str) -> list[Middleware]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InventoryError as exc:
            return error_response(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason)
        except Exception:
            _log.exception("unexpected error", method=request.method, path=request.path)
            return error_response(500, "internal error; see the admin API's log")

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                response = error_response(401, "Authorization: missing or wrong bearer token")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        bad = _control_field(request)
        if bad is not None:
            return error_response(400, f"{bad}: control characters are not allowed")
        return await handler(request)

    return [errors, auth]


def _control_field(request: web.Request) -> str | None:
    """The first place of the URL (``path`` or a query name) holding a control character."""
    if _CONTROL.search(request.path):
        return "path"
    for name, value in request.query.items():
        if _CONTROL.search(name) or _CONTROL.search(value):
            return name[:40].encode("unicode_escape").decode()
    return None


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_admin_app(config: Config, store: Store) -> web.Application:
    """The admin API as an aiohttp application serving ``store``."""
    app = web.Application(
        middlewares=_middlewares(ensure_admin_token(config)), client_max_size=MAX_BODY
    )
    app[STORE_KEY] = store
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/openapi.json", _openapi)
    return app
