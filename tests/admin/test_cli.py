"""The CLI round trip against a real admin API: build a cloud, show it, -f json, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from admin.helpers import running_admin
from cloudmeta.config import Config

CLI = [sys.executable, "-m", "cloudmeta.cli"]


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cloudmeta.cli.main import main; main()",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _json(env: dict[str, str], *args: str) -> Any:
    code, out, err = await _cli(env, *args, "-f", "json")
    assert code == 0, err
    return json.loads(out)


async def test_cli_builds_and_shows_a_cloud(
    make_config: Any, state_dir: Path, tmp_path: Path
) -> None:
    config: Config = make_config()
    async with running_admin(config) as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")} | {
            "CLOUDMETA_STATE_PATH": str(state_dir),
            "CLOUDMETA_ADMIN_URL": url,
            "COLUMNS": "200",  # rich wraps table cells to the terminal width
        }
        network = await _json(env, "network", "create", "cmt-net")
        subnet = await _json(
            env,
            "subnet",
            "create",
            "cmt-sub",
            "--network",
            "cmt-net",
            "--cidr",
            "192.0.2.0/24",
            "--dns",
            "192.0.2.53",
            "--host-route",
            "198.51.100.0/24=192.0.2.254",
        )
        assert subnet["network_id"] == network["id"]
        assert subnet["host_routes"] == [
            {"destination": "198.51.100.0/24", "nexthop": "192.0.2.254"}
        ]
        await _json(env, "router", "create", "cmt-r")
        router = await _json(env, "router", "add-subnet", "cmt-r", "cmt-sub")
        assert router["interfaces"][0]["ip_address"] == "192.0.2.1"
        key_file = tmp_path / "cmt-key.pub"
        key_file.write_text(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGk5H7xRJXzAj9+ut6lVyCcAyWkO0WZlG0bzJnDPFWk cmt\n"
        )
        await _json(env, "keypair", "create", "cmt-key", "--public-key", str(key_file))
        user_data = tmp_path / "cmt-user-data"
        user_data.write_text("#cloud-config\n")
        server = await _json(
            env,
            "server",
            "create",
            "cmt-vm",
            "--network",
            "cmt-net",
            "--fixed-ip",
            "192.0.2.50",
            "--key-name",
            "cmt-key",
            "--user-data",
            str(user_data),
            "--property",
            "role=web",
            "--hostname",
            "cmt-host",
        )
        assert server["hostname"] == "cmt-host" and server["metadata"] == {"role": "web"}
        (vm_port,) = server["ports"]
        mac = next(p["mac_address"] for p in await _json(env, "port", "list") if p["id"] == vm_port)
        assert server["addresses"] == {
            "cmt-net": [
                {
                    "addr": "192.0.2.50",
                    "version": 4,
                    "OS-EXT-IPS-MAC:mac_addr": mac,
                    "OS-EXT-IPS:type": "fixed",
                }
            ]
        }
        shown = await _json(env, "server", "show", "cmt-vm")
        assert shown["id"] == server["id"] and shown["addresses"] == server["addresses"]
        (listed,) = await _json(env, "server", "list")
        assert listed["addresses"] == server["addresses"]
        code, table, _ = await _cli(env, "server", "show", "cmt-vm")
        assert code == 0 and "cmt-net=192.0.2.50" in table
        ports = await _json(env, "port", "list")
        assert isinstance(ports, list) and len(ports) == 2
        assert {"192.0.2.50", "192.0.2.1"} == {p["fixed_ips"][0]["ip_address"] for p in ports}
        code, table, _ = await _cli(env, "server", "list")
        assert code == 0 and "cmt-vm" in table and "cmt-net=192.0.2.50" in table
        code, out, _ = await _cli(env, "server", "password", "show", "cmt-vm")
        assert code == 0 and out.strip() == ""
        # server set / unset, as openstack's: properties merge, tags add, unset removes.
        code, out, err = await _cli(
            env,
            "server",
            "set",
            "cmt-vm",
            "--property",
            "tier=1",
            "--property",
            "role=db",
            "--tag",
            "blue",
            "--tag",
            "green",
            "--instance-metadata-tags",
            "enabled",
        )
        assert code == 0 and out == "", err
        shown = await _json(env, "server", "show", "cmt-vm")
        assert shown["metadata"] == {"role": "db", "tier": "1"}
        assert shown["tags"] == ["blue", "green"] and shown["instance_metadata_tags"] == "enabled"
        code, _, err = await _cli(
            env, "server", "unset", "cmt-vm", "--property", "tier", "--tag", "blue"
        )
        assert code == 0, err
        shown = await _json(env, "server", "show", "cmt-vm")
        assert shown["metadata"] == {"role": "db"} and shown["tags"] == ["green"]
        # Bad input: exit 1 and one line on stderr naming the problem.
        for args, needle in [
            (["subnet", "create", "--network", "cmt-net", "--cidr", "198.51.100.0/33"], "cidr"),
            (["server", "show", "cmt-nope"], "cmt-nope"),
            (
                ["server", "create", "cmt-2", "--network", "cmt-net", "--fixed-ip", "192.0.2.50"],
                "already used",
            ),
            (["server", "set", "cmt-vm", "--tag", "a/b"], "tags"),
            (["server", "set", "cmt-vm", "--property", "k=" + "v" * 256], "metadata"),
        ]:
            code, out, err = await _cli(env, *args)
            assert code == 1 and out == "", (args, out, err)
            assert err.count("\n") == 1 and needle in err, err
        code, _, err = await _cli(env | {"CLOUDMETA_ADMIN_TOKEN": "wrong"}, "network", "list")
        assert code == 1 and "token" in err
