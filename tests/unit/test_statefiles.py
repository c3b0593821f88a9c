"""Secrets kept in state_path: made once, 0600, shared by every service of the host, never empty."""

from __future__ import annotations

import stat
from collections.abc import Callable

from cloudmeta.config import Config
from cloudmeta.statefiles import ensure_admin_token, shared_secret

ConfigFactory = Callable[..., Config]


def test_unset_shared_secret_is_generated_once_and_shared(make_config: ConfigFactory) -> None:
    config = make_config(metadata_proxy_shared_secret="")
    first = shared_secret(config)
    assert len(first) >= 32
    assert shared_secret(make_config(metadata_proxy_shared_secret="")) == first
    path = config.state_path / "metadata_proxy_shared_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configured_values_win(make_config: ConfigFactory) -> None:
    config = make_config(metadata_proxy_shared_secret="s3", admin_token="t0")
    assert shared_secret(config) == "s3"
    assert ensure_admin_token(config) == "t0"
    assert not (config.state_path / "metadata_proxy_shared_secret").exists()


def test_admin_token_is_kept(make_config: ConfigFactory) -> None:
    config = make_config()
    token = ensure_admin_token(config)
    assert token and ensure_admin_token(config) == token
    assert config.admin_token_file.read_text().strip() == token
