"""The admin API's OpenAPI 3.1 document, generated from the route table and the request models."""

from __future__ import annotations

import functools
import re
from typing import Any

from cloudmeta import __version__

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    from cloudmeta.api.admin.handlers import ROUTES

    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": re.sub(r"\W+", "_", f"{route.method} {route.path}").strip("_").lower(),
            "security": [{"bearer": []}],
            "responses": {
                "400": _error("Bad input; the message names the field"),
                "401": _error("Missing or wrong bearer token"),
            },
        }
        parameters = [
            {"name": name, "in": "query", "required": name == "since", "schema": _query(name)}
            for name in route.query
        ]
        if "{id}" in route.path:
            parameters.append(
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            )
            operation["responses"]["404"] = _error("No such object")
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            name = route.body.__name__
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
            ref: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
            if route.body_key:
                ref = {
                    "type": "object",
                    "required": [route.body_key],
                    "properties": {route.body_key: ref},
                }
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref}},
            }
        if route.method in ("POST", "PUT", "DELETE"):
            operation["responses"]["409"] = _error("Conflicts with the inventory's state")
        if route.answer is None:
            operation["responses"]["204"] = {"description": "Done"}
        else:
            status = "201" if route.method == "POST" else "200"
            operation["responses"][status] = {
                "description": "OK",
                "content": {
                    "application/json": {"schema": {"type": "object", "required": [route.answer]}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "cloudmeta admin API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _query(name: str) -> dict[str, Any]:
    if name == "since":
        return {"type": "integer", "minimum": 0}
    if name == "timeout":
        return {"type": "number", "minimum": 0, "maximum": 300}
    return {"type": "string"}
