"""The attack scene on the proxy harness (tests/proxy/harness.py), in any proxy mode:

* networks A and B with the SAME range 192.0.2.0/24 (overlap), B in another project; A has two
  instances (.10, .11), B one (.10); each network has its DHCP-style namespace and proxy;
* a router joining networks C (198.51.100.0/24) and D (203.0.113.0/24), one instance each,
  served by one router proxy.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks import Victim
from harness import META_IP, Chain, Instance, curl, uuid_of

from cloudmeta import linux
from cloudmeta.agent.identity import sign_instance_id
from cloudmeta.api.metadata.tokens import TokenAuthority
from cloudmeta.dhcp.antispoof import PortSecurity
from cloudmeta.dhcp.model import NetworkBundle
from cloudmeta.linux.names import link_name

ATTACKER = Path(__file__).resolve().parents[1] / "support" / "attacker.py"


@dataclass
class Member:
    instance: Instance
    name: str
    project_id: str
    network_id: str
    router_id: str = ""


async def plug(
    chain: Chain, gateway_ns: str, network_id: str, ip: str, index: int, project_id: str
) -> Instance:
    """A server on ``network_id`` and its namespace on the network's bridge in ``gateway_ns``."""
    assert chain.client is not None
    server = await chain.client.create_server(
        f"cmt-{chain.tag}-vm{index}",
        [{"network_id": network_id, "fixed_ip": ip}],
        project_id=project_id,
    )
    port = await chain.client.get_port(server["ports"][0])
    ns = chain.name("i", index)
    await chain.add_namespace(ns)
    await linux.plug_veth(
        ns,
        "eth0",
        mac=port["mac_address"],
        host_ifname=link_name("cmt-", "tap", port["id"]),  # what port security filters
        bridge=bridge_of(chain, network_id),
        bridge_namespace=gateway_ns,
    )
    await linux.add_address(ns, "eth0", f"{ip}/24")
    await linux.add_route(ns, f"{META_IP}/32", via=ip.rsplit(".", 1)[0] + ".1")
    return Instance(ns, ip, server["id"], port["id"])


def bridge_of(chain: Chain, network_id: str) -> str:
    return f"cmt-b{network_id[:8]}"


async def network_port(chain: Chain, gateway_ns: str, network_id: str, gateway: str) -> None:
    """The network's bridge in ``gateway_ns`` and the gateway's own port on it (as the DHCP
    port or router interface is): both ends of one veth in that namespace."""
    bridge = bridge_of(chain, network_id)
    await linux.create_bridge(gateway_ns, bridge)
    inner = f"cmt-q{network_id[:8]}"
    await linux.plug_veth(
        gateway_ns,
        inner,
        mac="fa:16:3e:00:00:01",
        host_ifname=f"cmt-t{network_id[:8]}",
        bridge=bridge,
        bridge_namespace=gateway_ns,
    )
    await linux.add_address(gateway_ns, inner, f"{gateway}/24")


async def build_scene(chain: Chain) -> list[Member]:
    assert chain.client is not None and chain.manager is not None
    members: list[Member] = []
    home = chain.project_id
    other = (await chain.client.create_project(f"cmt-{chain.tag}-other"))["id"]
    layout = [("a", home, ["192.0.2.10", "192.0.2.11"]), ("b", other, ["192.0.2.10"])]
    index = 0
    for letter, project, ips in layout:
        chain.project_id = project
        network_id, _ = await chain.network("192.0.2.0/24")
        ns = await chain.gateway_namespace(chain.name("d" + letter, 0))
        await network_port(chain, ns, network_id, "192.0.2.1")
        for ip in ips:
            inst = await plug(chain, ns, network_id, ip, index, project)
            members.append(Member(inst, f"cmt-{chain.tag}-vm{index}", project, network_id))
            index += 1
        await secure(chain, PortSecurity(ns, "cmt-"), [network_id])
        await chain.manager.ensure(ns, network_id=network_id, bind=(META_IP, 80))
    chain.project_id = home
    router = await chain.client.create_router(f"cmt-{chain.tag}", project_id=home)
    router_ns = await chain.gateway_namespace(chain.name("r", 0))
    for prefix in ("198.51.100", "203.0.113"):
        network_id, subnet_id = await chain.network(f"{prefix}.0/24")
        await chain.client.add_router_interface(router["id"], subnet_id)
        await network_port(chain, router_ns, network_id, f"{prefix}.1")
        inst = await plug(chain, router_ns, network_id, f"{prefix}.20", index, home)
        members.append(Member(inst, f"cmt-{chain.tag}-vm{index}", home, network_id, router["id"]))
        index += 1
    router_networks = [m.network_id for m in members if m.router_id]
    await secure(chain, PortSecurity(router_ns, "cmt-"), router_networks)
    await chain.manager.ensure(router_ns, router_id=router["id"], bind=(META_IP, 80))
    for member in members:
        await wait_ok(member.instance)
    return members


async def secure(chain: Chain, security: PortSecurity, network_ids: list[str]) -> None:
    """Port security on the bridges in that namespace, as the DHCP agent keeps it."""
    assert chain.client is not None
    for network_id in network_ids:
        bundle = NetworkBundle.from_json(dict(await chain.client.get_network_dhcp(network_id)))
        await security.update(bundle)


async def wait_ok(instance: Instance, deadline: float = 10.0) -> None:
    """Child proxies need a moment to listen; inline ones are ready at once."""
    end = time.monotonic() + deadline
    while True:
        status, body = await curl(instance.namespace, max_time=2)
        if status == 200 and uuid_of(body) == instance.server_id:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{instance.namespace} never got its document: {status} {body}")
        await asyncio.sleep(0.1)


def victim_of(chain: Chain, member: Member) -> Victim:
    secret = chain.config.metadata_proxy_shared_secret.get_secret_value()
    tokens = TokenAuthority.from_state(chain.config.state_path)
    server_id = member.instance.server_id
    return Victim(
        server_id=server_id,
        project_id=member.project_id,
        network_id=member.network_id,
        ip=member.instance.ip,
        signature=sign_instance_id(secret, server_id),
        token=tokens.issue(server_id, 600),
        expired_token=tokens.issue(server_id, 1, now=time.time() - 3600),
        router_id=member.router_id,
    )


def forbidden_for(members: list[Member], me: Member) -> list[str]:
    """What must never appear in an answer to ``me``: the others' ids, names and projects."""
    words: list[str] = []
    for other in members:
        if other is me:
            continue
        words += [other.instance.server_id, json.dumps(other.name)]
        if other.project_id != me.project_id:
            words.append(other.project_id)
    return words


async def attack(
    member: Member, requests: list[str], count: int, forbidden: list[str], threads: int = 4
) -> dict[str, Any]:
    """Run tests/support/attacker.py inside the member's namespace."""
    job = {
        "host": META_IP,
        "port": 80,
        "requests": requests,
        "count": count,
        "own": member.instance.server_id,
        "forbidden": forbidden,
        "threads": threads,
        "timeout": 5.0,
    }
    result = await linux.run(
        [sys.executable, str(ATTACKER)],
        namespace=member.instance.namespace,
        input=json.dumps(job).encode(),
        timeout=600,
    )
    return dict(json.loads(result.stdout))
