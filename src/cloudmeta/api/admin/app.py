"""The admin API application: bearer-token auth, JSON errors, and the route table.

Every failure a client can cause becomes ``{"error": {"code": N, "message": "..."}}`` with a
4xx status; the inventory database away (a lost or refused connection) is a 503 with
``Retry-After`` and one log line; anything unexpected is logged with its traceback and answered
with a bare 500 that reveals nothing.
"""

from __future__ import annotations

import hmac
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from cloudmeta.api.admin.handlers import ROUTES, SCHEDULING_KEY, STORE_KEY, error_response
from cloudmeta.api.admin.metrics import metrics_route
from cloudmeta.api.admin.openapi import openapi_document
from cloudmeta.config import Config
from cloudmeta.inventory import InventoryError, InventoryUnavailable, Store
from cloudmeta.inventory.agents import Scheduling
from cloudmeta.logs import get_logger, throttled_logger
from cloudmeta.statefiles import ensure_admin_token

__all__ = ["build_admin_app", "ensure_admin_token"]

_log = get_logger("admin-api")
_away_log = throttled_logger("admin-api")  # every request of an outage would log its line
_PUBLIC_PATHS = frozenset({"/openapi.json", "/metrics"})
# A request body larger than this is refused before parsing (user_data is at most 64 KiB).
MAX_BODY = 1024 * 1024
# Ids in the path and query values reach SQL; PostgreSQL refuses NUL in text (a DataError).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _middlewares(token: str) -> list[Middleware]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InventoryUnavailable as exc:
            _away_log.warning(
                "inventory database unavailable",
                method=request.method,
                path=request.path[:100],
                error=exc.cause,
            )
            return error_response(exc.status, exc.message)
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
    app[SCHEDULING_KEY] = Scheduling.from_config(config)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_routes([metrics_route(store)])
    return app
