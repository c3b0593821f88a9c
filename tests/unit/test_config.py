"""The configuration contract: TOML file, CLOUDMETA_* variables that win over it, masked secrets."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudmeta.cli.main import cli
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


def test_rate_limiting_has_neutrons_names_and_defaults() -> None:
    shown = load_config(Path("/dev/null")).masked()
    assert shown["metadata_rate_limiting"] == {
        "rate_limit_enabled": False,
        "ip_versions": [4],
        "base_window_duration": 10,
        "base_query_rate_limit": 10,
        "burst_window_duration": 10,
        "burst_query_rate_limit": 10,
    }
    assert "metadata_rate_limit" not in shown and "metadata_rate_burst" not in shown


def test_rate_limiting_from_file_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        '[metadata_rate_limiting]\nip_versions = ["4", "6"]\nbase_window_duration = 60\n'
        "burst_query_rate_limit = 3\n"
    )
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMITING__RATE_LIMIT_ENABLED", "true")
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMITING__BURST_WINDOW_DURATION", "2")
    config = load_config(file)
    options = config.metadata_rate_limiting
    assert options.rate_limit_enabled is True
    assert options.ip_versions == [4, 6]  # Neutron's strings taken
    assert (options.base_window_duration, options.base_query_rate_limit) == (60, 10)
    assert (options.burst_window_duration, options.burst_query_rate_limit) == (2, 3)
    assert config.deprecations == []
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMITING__IP_VERSIONS", "[6]")
    assert load_config(file).metadata_rate_limiting.ip_versions == [6]
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMITING__IP_VERSIONS", "[5]")
    with pytest.raises(ConfigError, match="CLOUDMETA_METADATA_RATE_LIMITING__IP_VERSIONS"):
        load_config(file)
    monkeypatch.delenv("CLOUDMETA_METADATA_RATE_LIMITING__IP_VERSIONS")
    file.write_text("[metadata_rate_limiting]\nbase_query_rate_limit = 0\n")
    with pytest.raises(ConfigError, match=r"metadata_rate_limiting\.base_query_rate_limit"):
        load_config(file)


def test_old_rate_options_map_onto_neutrons_with_a_deprecation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "c.toml"
    file.write_text("metadata_rate_limit = 2.0\nmetadata_rate_burst = 5\n")
    config = load_config(file)
    # What the old bucket let through at most: 5 + 2/s x the window.
    assert config.metadata_rate_limiting.model_dump() == {
        "rate_limit_enabled": True,
        "ip_versions": [4, 6],
        "base_window_duration": 10,
        "base_query_rate_limit": 25,
        "burst_window_duration": 1,
        "burst_query_rate_limit": 7,
    }
    (line,) = config.deprecations
    assert "metadata_rate_limit=2.0" in line and "deprecated" in line
    assert "[metadata_rate_limiting]" in line and "base_query_rate_limit=25" in line
    # From the environment, the burst defaulting to the old 50; 0 req/s was "no limit".
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMIT", "1")
    options = load_config(Path("/dev/null")).metadata_rate_limiting
    assert (options.base_query_rate_limit, options.burst_query_rate_limit) == (60, 51)
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMIT", "0")
    config = load_config(Path("/dev/null"))
    assert config.metadata_rate_limiting.rate_limit_enabled is False
    assert len(config.deprecations) == 1
    # The new section given: it wins, the old options are named as ignored.
    monkeypatch.setenv("CLOUDMETA_METADATA_RATE_LIMITING__RATE_LIMIT_ENABLED", "true")
    config = load_config(file)
    assert config.metadata_rate_limiting.base_query_rate_limit == 10
    (line,) = config.deprecations
    assert "ignored" in line


def test_config_show_logs_the_deprecation_once(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('metadata_rate_limit = 2.0\nlog_format = "json"\n')
    result = CliRunner().invoke(cli, ["--config", str(file), "config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["metadata_rate_limit"] == 2.0
    assert shown["metadata_rate_limiting"]["rate_limit_enabled"] is True
    warnings = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and "metadata_rate_limit=2.0" in warnings[0], result.stderr


def test_metadata_workers_auto_is_one_per_core(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[api]\nmetadata_workers = "auto"\n')
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert load_config(file).api.metadata_workers == 6
    monkeypatch.setenv("CLOUDMETA_API__METADATA_WORKERS", "3")
    assert load_config(file).api.metadata_workers == 3
    monkeypatch.setenv("CLOUDMETA_API__METADATA_WORKERS", "zero")
    with pytest.raises(ConfigError):
        load_config(file)


def test_inline_metadata_workers_take_auto_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Neutron's metadata agent option, at the top level; default auto: one per core, at most
    AUTO_INLINE_WORKERS, and one process when rate limiting needs exact windows."""
    from cloudmeta.config import AUTO_INLINE_WORKERS

    file = tmp_path / "c.toml"
    file.write_text("")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert load_config(file).metadata_workers == 2
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert load_config(file).metadata_workers == AUTO_INLINE_WORKERS
    file.write_text('metadata_workers = "auto"\n')
    assert load_config(file).metadata_workers == AUTO_INLINE_WORKERS
    assert load_config(file).api.metadata_workers == 1  # the API's own option is apart
    file.write_text("[metadata_rate_limiting]\nrate_limit_enabled = true\n")
    assert load_config(file).metadata_workers == 1  # per-process windows: one process
    file.write_text("metadata_workers = 3\n[metadata_rate_limiting]\nrate_limit_enabled = true\n")
    assert load_config(file).metadata_workers == 3  # asked for: the operator's choice
    monkeypatch.setenv("CLOUDMETA_METADATA_WORKERS", "2")
    assert load_config(file).metadata_workers == 2
    monkeypatch.setenv("CLOUDMETA_METADATA_WORKERS", "0")  # Neutron: no separate worker
    assert load_config(file).metadata_workers == 1
    monkeypatch.setenv("CLOUDMETA_METADATA_WORKERS", "-3")
    with pytest.raises(ConfigError, match="metadata_workers"):
        load_config(file)


def test_agent_and_scheduling_options_have_neutrons_names_and_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CLOUDMETA_HOST", raising=False)
    config = load_config()
    assert (config.report_interval, config.agent_down_time) == (30.0, 75.0)
    assert config.dhcp_agents_per_network == 1
    assert config.allow_automatic_dhcp_failover and config.allow_automatic_l3agent_failover
    assert config.host == socket.gethostname()


def test_nova_metadata_host_takes_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDMETA_NOVA_METADATA_HOST", "192.0.2.11, 192.0.2.12:9775,2001:db8::1")
    config = load_config()
    assert config.nova_metadata_urls == [
        "http://192.0.2.11:8775",
        "http://192.0.2.12:9775",
        "http://[2001:db8::1]:8775",
    ]
    assert config.nova_metadata_url == "http://192.0.2.11:8775"
    monkeypatch.setenv("CLOUDMETA_NOVA_METADATA_HOST", "192.0.2.11,,192.0.2.12")
    with pytest.raises(ConfigError, match=r"nova_metadata_host.*CLOUDMETA_NOVA_METADATA_HOST"):
        load_config()
