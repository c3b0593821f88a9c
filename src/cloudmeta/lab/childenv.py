"""A configuration handed to a child process (the lab's all-in-one) as ``CLOUDMETA_*`` variables."""

from __future__ import annotations

import json
from typing import Any

from cloudmeta.config import Config

__all__ = ["config_env"]


def config_env(config: Config) -> dict[str, str]:
    """``config`` as ``CLOUDMETA_*`` variables, so a child process sees the same settings."""
    env: dict[str, str] = {}
    data = config.model_dump(mode="json")
    data["metadata_proxy_shared_secret"] = config.metadata_proxy_shared_secret.get_secret_value()
    if config.admin_token is not None:
        data["admin_token"] = config.admin_token.get_secret_value()
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                if subvalue is not None:
                    env[f"CLOUDMETA_{key}__{sub}".upper()] = _env_value(subvalue)
        else:
            env[f"CLOUDMETA_{key}".upper()] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, list) else str(value)
