"""The configuration contract: TOML file, CLOUDMETA_* variables that win over it, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmeta.config import ConfigError, ProxyMode, load_config


def test_defaults_follow_openstack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDMETA_STATE_PATH", str(tmp_path))
    config = load_config()
    assert config.nova_metadata_port == 8775
    assert config.metadata_port == 9697
    assert config.api.metadata_cache_expiration == 15
    assert config.proxy_socket_path == tmp_path / "metadata_proxy"
    assert config.metadata_proxy_mode is ProxyMode.INLINE


def test_environment_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        'state_path = "/srv/a"\nmetadata_proxy_shared_secret = "from-file"\n'
        '[database]\nconnection = "sqlite:////srv/a/x.db"\n[api]\nmetadata_cache_expiration = 3\n'
    )
    monkeypatch.setenv("CLOUDMETA_METADATA_PROXY_SHARED_SECRET", "from-env")
    monkeypatch.setenv("CLOUDMETA_DATABASE__CONNECTION", "postgresql://u@127.0.0.1:5432/test")
    config = load_config(file)
    assert config.state_path == Path("/srv/a")
    assert config.metadata_proxy_shared_secret.get_secret_value() == "from-env"
    assert config.database.connection == "postgresql://u@127.0.0.1:5432/test"
    assert config.api.metadata_cache_expiration == 3
    shown = config.masked()
    assert "from-env" not in str(shown)


def test_bad_file_names_the_option(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('metadata_proxy_mode = "carrier-pigeon"\n')
    with pytest.raises(ConfigError, match="metadata_proxy_mode"):
        load_config(file)
    file.write_text("this is = not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(file)


def test_show_masks_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDMETA_DATABASE__CONNECTION", "postgresql://cmt:s3cr3t@127.0.0.1/db")
    shown = load_config(Path("/dev/null")).masked()
    assert "s3cr3t" not in str(shown)
    assert shown["database"]["connection"] == "postgresql://cmt:***@127.0.0.1/db"
    monkeypatch.setenv("CLOUDMETA_DATABASE__CONNECTION", "postgresql://cmt@127.0.0.1:5432/db")
    shown = load_config(Path("/dev/null")).masked()
    assert shown["database"]["connection"] == "postgresql://cmt@127.0.0.1:5432/db"


def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "c.toml"
    file.write_text("debug = true\n")
    monkeypatch.setenv("CLOUDMETA_METADATA_PROXY_MODE", "carrier-pigeon")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert "CLOUDMETA_METADATA_PROXY_MODE" in str(info.value)
    assert str(file) not in str(info.value)
    monkeypatch.delenv("CLOUDMETA_METADATA_PROXY_MODE")
    monkeypatch.setenv("CLOUDMETA_API__METADATA_WORKERS", "0")
    with pytest.raises(ConfigError, match="CLOUDMETA_API__METADATA_WORKERS"):
        load_config(file)
    monkeypatch.delenv("CLOUDMETA_API__METADATA_WORKERS")
    # A list option takes JSON from the environment; bad JSON is a ConfigError, not a crash.
    monkeypatch.setenv("CLOUDMETA_DNSMASQ_DNS_SERVERS", "not json")
    with pytest.raises(ConfigError, match=r"environment variable.*dnsmasq_dns_servers"):
        load_config(file)
    monkeypatch.delenv("CLOUDMETA_DNSMASQ_DNS_SERVERS")
    # A bad value from the file still names the file.
    file.write_text("debug = 3.5\n")
    with pytest.raises(ConfigError, match=f"file {file}"):
        load_config(file)


def test_vendordata_connect_timeout_has_novas_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDMETA_API__VENDORDATA_DYNAMIC_CONNECT_TIMEOUT", "1")
    with pytest.raises(ConfigError, match="vendordata_dynamic_connect_timeout"):
        load_config(Path("/dev/null"))
    monkeypatch.setenv("CLOUDMETA_API__VENDORDATA_DYNAMIC_CONNECT_TIMEOUT", "3")
    assert load_config(Path("/dev/null")).api.vendordata_dynamic_connect_timeout == 3
