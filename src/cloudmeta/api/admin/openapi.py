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


_STRING = {"type": "string"}
_NULLABLE = {"type": ["string", "null"]}
# One address in a server's ``addresses`` (Nova's names, OS-EXT-IPS and OS-EXT-IPS-MAC).
_SERVER_ADDRESS = {
    "type": "object",
    "required": ["addr", "version", "OS-EXT-IPS-MAC:mac_addr", "OS-EXT-IPS:type"],
    "properties": {
        "addr": _STRING,
        "version": {"enum": [4, 6]},
        "OS-EXT-IPS-MAC:mac_addr": _STRING,
        "OS-EXT-IPS:type": {"enum": ["fixed"]},
    },
}
_SERVER_FIELDS: dict[str, Any] = {
    "id": _STRING,
    "name": _STRING,
    "hostname": _STRING,
    "project_id": _STRING,
    "availability_zone": _NULLABLE,
    "flavor": _STRING,
    "image_id": _NULLABLE,
    "key_name": _NULLABLE,
    "user_data": _NULLABLE,
    "metadata": {"type": "object", "additionalProperties": _STRING},
    "launch_index": {"type": "integer"},
    "config_drive": {"type": "boolean"},
    "created_at": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "items": _STRING},
    "instance_metadata_tags": {"enum": ["enabled", "disabled"]},
    "ports": {"type": "array", "items": _STRING},
    "addresses": {
        "type": "object",
        "description": "Network name -> the server's addresses on it, as Nova's",
        "additionalProperties": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/ServerAddress"},
        },
    },
}
_SERVER = {"type": "object", "required": list(_SERVER_FIELDS), "properties": _SERVER_FIELDS}
# Answer key -> (schema of its value, a list of them?); other answers are described as objects.
_ANSWERS = {"server": ("Server", False), "servers": ("Server", True)}


def _answer(key: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": [key]}
    if key in _ANSWERS:
        name, many = _ANSWERS[key]
        ref: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
        schema["properties"] = {key: {"type": "array", "items": ref} if many else ref}
    return schema


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    from cloudmeta.api.admin.handlers import ROUTES

    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Error": _ERROR,
        "Server": _SERVER,
        "ServerAddress": _SERVER_ADDRESS,
    }
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
        if route.method in ("POST", "PUT", "PATCH", "DELETE"):
            operation["responses"]["409"] = _error("Conflicts with the inventory's state")
        if route.answer is None:
            operation["responses"]["204"] = {"description": "Done"}
        else:
            status = "201" if route.method == "POST" else "200"
            operation["responses"][status] = {
                "description": "OK",
                "content": {"application/json": {"schema": _answer(route.answer)}},
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
