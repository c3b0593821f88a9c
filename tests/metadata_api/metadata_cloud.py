"""Test helpers: a small cloud in a real inventory, signed headers, a client of the API."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cloudmeta.api.metadata.identity import sign_instance_id
from cloudmeta.inventory import Store, compute_ops, network_ops, projects
from cloudmeta.inventory.specs import (
    KeypairCreate,
    NetworkCreate,
    NetworkRequest,
    ServerCreate,
    SubnetCreate,
)

SECRET = "cmt-test-secret"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKcmtcmtcmtcmtcmtcmtcmtcmtcmtcmtcmtcmtcmtcmt cmt"
USER_DATA = b"#cloud-config\nhostname: cmt\n"


@dataclass
class Cloud:
    """What the tests created: ids by name."""

    project: str = ""
    networks: dict[str, str] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)
    keypair: str = ""


async def build_cloud(store: Store, servers: int = 2) -> Cloud:
    """Two networks with the same IPv4 range (overlap), one IPv6 subnet, N servers on each."""
    cloud = Cloud()

    async def work(tx: Any) -> None:
        project = await projects.create_project(tx, "cmt-project")
        cloud.project = project.id
        keypair, _ = await compute_ops.create_keypair(
            tx, KeypairCreate(name="cmt-key", project_id=project.id, public_key=PUBLIC_KEY)
        )
        cloud.keypair = keypair.id
        for name in ("a", "b"):
            net = await network_ops.create_network(
                tx, NetworkCreate(name=f"cmt-{name}", project_id=project.id, mtu=1450)
            )
            cloud.networks[name] = net.id
            sub = await network_ops.create_subnet(
                tx,
                SubnetCreate(
                    network_id=net.id,
                    cidr="192.0.2.0/24",
                    project_id=project.id,
                    dns_nameservers=["198.51.100.53"],
                ),
            )
            cloud.subnets[name] = sub.id
        v6 = await network_ops.create_subnet(
            tx,
            SubnetCreate(
                network_id=cloud.networks["a"],
                cidr="2001:db8:1::/64",
                project_id=project.id,
                ipv6_address_mode="slaac",
            ),
        )
        cloud.subnets["a6"] = v6.id
        for i in range(servers):
            for name in ("a", "b"):
                server = await compute_ops.create_server(
                    tx,
                    ServerCreate(
                        name=f"cmt-{name}{i}",
                        project_id=project.id,
                        key_name="cmt-key",
                        user_data=base64.b64encode(USER_DATA).decode(),
                        metadata={"role": name},
                        availability_zone="nova",
                        networks=[
                            NetworkRequest(
                                network_id=cloud.networks[name], fixed_ip=f"192.0.2.{10 + i}"
                            )
                        ],
                    ),
                )
                cloud.servers[f"{name}{i}"] = server.id

    await store.transact(work)
    return cloud


def signed(instance_id: str, tenant_id: str, address: str = "192.0.2.10") -> dict[str, str]:
    return {
        "X-Instance-ID": instance_id,
        "X-Tenant-ID": tenant_id,
        "X-Instance-ID-Signature": sign_instance_id(SECRET.encode(), instance_id),
        "X-Forwarded-For": address,
    }


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    cloud: Cloud
    store: Store
    port: int

    def headers(self, name: str, **extra: str) -> dict[str, str]:
        return {**signed(self.cloud.servers[name], self.cloud.project), **extra}

    async def get(self, path: str, name: str | None = "a0", **kw: Any) -> tuple[int, bytes, Any]:
        headers = self.headers(name) if name else {}
        headers.update(kw.pop("headers", {}))
        async with self.session.get(self.url + path, headers=headers, **kw) as resp:
            return resp.status, await resp.read(), resp.headers
