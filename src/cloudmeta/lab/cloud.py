"""The lab's cloud (devstack's job): the services, a demo project, networks, instances.

Everything goes through the admin API, as a user of the cloud would; only the parts a real
cloud gets from its hypervisor (plugging an instance's port into its network's bridge, booting
it) are done here directly. Every step records what it makes in :mod:`~cloudmeta.lab.state`
first, so :func:`down` can undo a lab that crashed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.config import Config
from cloudmeta.dhcp.render import DnsmasqFiles
from cloudmeta.l3.model import bridge_port_name, router_namespace
from cloudmeta.lab import instance, repo
from cloudmeta.lab.cloudcfg import Datasource, lab_user_data
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.state import LabInstance, LabNetwork, LabState, lab_dir, save_state
from cloudmeta.lab.supervise import all_in_one_log, spawn_all_in_one
from cloudmeta.lab.vm import driver as vm_driver
from cloudmeta.lab.vm.runtime import VmOptions
from cloudmeta.linux.cleanup import cleanup
from cloudmeta.linux.names import bridge_name
from cloudmeta.linux.process import cmdline, pid_alive, stop_pid
from cloudmeta.linux.qemu import create_tap

__all__ = [
    "DEMO_NETWORKS",
    "Progress",
    "aio_config",
    "boot_instance",
    "build_cloud",
    "down",
    "ensure_all_in_one",
    "instance_paths",
    "instance_row",
    "kill_instance",
    "lab_running",
    "last_step",
    "wait_all_in_one",
    "wait_booted",
]

Progress = Callable[[str], None]
# name -> (cidr, behind a router)
DEMO_NETWORKS = {"isolated": ("192.0.2.0/24", False), "routed": ("198.51.100.0/24", True)}
_INSTANCE_IFACE = "eth0"


def bridge_namespace(config: Config) -> str:
    """Where the lab's bridges live: the configured namespace, else ``<prefix>fabric``, so the
    DHCP agent can apply port security (MAC/IP anti-spoofing) there."""
    return config.bridge_namespace or f"{config.namespace_prefix}fabric"


def lab_running(state: LabState) -> bool:
    """Whether the ``lab up`` that made ``state`` still runs (otherwise the lab is debris)."""
    pid = state.owner_pid
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return False
    return " lab up" in cmdline(pid)  # not a recycled pid


def instance_paths(config: Config, name: str) -> instance.InstancePaths:
    return instance.InstancePaths(lab_dir(config) / "instances" / name)


async def _api_up(client: AdminClient) -> bool:
    try:
        await client.revision()
    except (AdminError, OSError):
        return False
    return True


def aio_config(config: Config) -> Config:
    """The all-in-one's configuration: the agents put the bridges where the lab plugs its
    instances (port security needs it)."""
    return config.model_copy(update={"bridge_namespace": bridge_namespace(config)})


async def ensure_all_in_one(
    config: Config, client: AdminClient, state: LabState, progress: Progress
) -> subprocess.Popen[bytes] | None:
    """Start ``cloudmeta all-in-one`` (pid file and log in the lab dir) unless the API answers;
    the process we started, for :func:`~cloudmeta.lab.supervise.supervise_all_in_one`."""
    if await _api_up(client):
        progress("services: cloudmeta already answers at " + client.url)
        return None
    proc = spawn_all_in_one(aio_config(config), state)
    progress(
        f"services: started cloudmeta all-in-one (pid {proc.pid}, log {all_in_one_log(config)})"
    )
    await wait_all_in_one(config, client, proc)
    return proc


async def wait_all_in_one(
    config: Config, client: AdminClient, proc: subprocess.Popen[bytes]
) -> None:
    """Until the all-in-one's admin API answers (60 s at most)."""
    log = all_in_one_log(config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"cloudmeta all-in-one exited with {proc.returncode}; see {log}")
        if await _api_up(client):
            return
        await asyncio.sleep(0.1)
    raise LabError(f"cloudmeta all-in-one did not answer within 60 s; see {log}")


async def build_cloud(
    config: Config, client: AdminClient, state: LabState, progress: Progress
) -> None:
    """Demo project, key pair, the two networks, the router, the apt repository on each."""
    project = await client.create_project("lab-demo")
    state.project_id = project["id"]
    save_state(config, state)
    keypair = await client.create_keypair("lab-key", project_id=project["id"])
    state.keypair_id = keypair["id"]
    progress(f"project lab-demo {project['id']}, key pair lab-key")
    for name, (cidr, routed) in DEMO_NETWORKS.items():
        network = await client.create_network(name, project_id=project["id"])
        state.networks[network["id"]] = LabNetwork(id=network["id"], name=name, cidr=cidr)
        save_state(config, state)
        subnet = await client.create_subnet(network["id"], cidr, name=f"{name}-subnet")
        state.networks[network["id"]].subnet_id = subnet["id"]
        if routed:
            router = await client.create_router("lab-router", project_id=project["id"])
            state.router_id = router["id"]
            save_state(config, state)
            await client.add_router_interface(router["id"], subnet["id"])
        progress(f"network {name} {cidr} ({'behind lab-router' if routed else 'no router'})")
    # One package tree for every network: build it before serving it on each in parallel
    # (two builds at once raced on the same files: "file changed as we read it").
    await repo.build_repository(lab_dir(config) / "repo")
    await asyncio.gather(*(ensure_repo(config, client, state, n) for n in list(state.networks)))
    progress("apt repository cmt-hello served on each network")


async def ensure_repo(config: Config, client: AdminClient, state: LabState, network_id: str) -> str:
    """The lab repository's URL on ``network_id``, serving it there first if needed."""
    net = state.networks.get(network_id)
    if net is None:
        found = await client.get_network(network_id)
        net = LabNetwork(id=network_id, name=found["name"], cidr="", owned=False)
        state.networks[network_id] = net
    if net.repo_ip and net.repo_pid and pid_alive(net.repo_pid):
        return f"http://{net.repo_ip}/"
    repo_dir = await repo.build_repository(lab_dir(config) / "repo")
    port = await client.create_port(
        network_id, name="lab-repo", device_owner="lab:repo", device_id="lab-repo"
    )
    net.repo_port_id = port["id"]
    net.repo_ip = port["fixed_ips"][0]["ip_address"]
    net.repo_namespace = f"{config.namespace_prefix}lab-repo-{network_id[:8]}"
    net.repo_link = bridge_port_name(config.device_prefix, port["id"])
    save_state(config, state)
    subnet = await client.get_subnet(port["fixed_ips"][0]["subnet_id"])
    prefixlen = ipaddress.ip_network(subnet["cidr"]).prefixlen
    await _plug(config, state, net.repo_namespace, net.repo_link, network_id, port["mac_address"])
    await linux.add_address(net.repo_namespace, _INSTANCE_IFACE, f"{net.repo_ip}/{prefixlen}")
    net.repo_pid = repo.start_server(
        net.repo_namespace, net.repo_ip, repo_dir, lab_dir(config) / f"repo-{network_id[:8]}.log"
    )
    save_state(config, state)
    await repo.wait_serving(net.repo_namespace, net.repo_ip)
    return f"http://{net.repo_ip}/"


async def _plug(
    config: Config, state: LabState, namespace: str, link: str, network_id: str, mac: str
) -> None:
    bridge = bridge_name(config.device_prefix, network_id)
    for name, names in ((namespace, state.namespaces), (bridge, state.bridges)):
        if name not in names:
            names.append(name)
    save_state(config, state)
    fabric = bridge_namespace(config)
    await linux.create_bridge(fabric, bridge)
    linux.create_namespace(namespace)
    await linux.set_link(namespace, "lo", up=True)
    await linux.plug_veth(
        namespace,
        _INSTANCE_IFACE,
        mac=mac,
        host_ifname=link,
        bridge=bridge,
        bridge_namespace=fabric,
    )


async def boot_instance(
    config: Config,
    client: AdminClient,
    state: LabState,
    name: str,
    network_id: str,
    *,
    fixed_ip: str | None = None,
    user_data: str | None = None,
    properties: dict[str, str] | None = None,
    datasource: Datasource = Datasource.OPENSTACK,
    vm: VmOptions | None = None,
) -> LabInstance:
    """Create the server through the API, plug its port, start its boot (do not wait).

    With ``vm`` the instance is a QEMU guest on a tap of the network's bridge."""
    if name in state.instances:
        raise LabError(f"lab instance {name} exists: `cloudmeta lab kill {name}` first")
    net = state.networks.get(network_id)
    if user_data is None:
        repo_url = await ensure_repo(config, client, state, network_id)
        user_data = lab_user_data(f"{name}-lab", secrets.token_urlsafe(12), repo_url)
        net = state.networks[network_id]
    nic: dict[str, str] = {"network_id": network_id}
    if fixed_ip:
        nic["fixed_ip"] = fixed_ip
    fields: dict[str, Any] = {
        "user_data": base64.b64encode(user_data.encode()).decode(),
        "metadata": properties or {},
    }
    if state.project_id:
        fields["project_id"] = state.project_id
        fields["key_name"] = "lab-key"
    server = await client.create_server(name, [nic], **fields)
    ports = await client.list_ports(device_id=server["id"])
    if not ports:
        raise LabError(f"server {name} got no port on network {network_id}")
    port = ports[0]
    inst = LabInstance(
        name=name,
        server_id=server["id"],
        network_id=network_id,
        network=net.name if net else network_id,
        namespace="" if vm else f"{config.namespace_prefix}vm-{name}",
        link=bridge_port_name(config.device_prefix, port["id"]),
        port_id=port["id"],
        ip=port["fixed_ips"][0]["ip_address"],
        mac=port["mac_address"],
        datasource=datasource.value,
        vm=vm is not None,
    )
    state.instances[name] = inst
    save_state(config, state)
    if vm is not None:
        await _boot_vm(config, state, inst, vm)
        return inst
    await _plug(config, state, inst.namespace, inst.link, network_id, port["mac_address"])
    await _wait_port_served(config, network_id, port["mac_address"])
    paths = instance_paths(config, name)
    await asyncio.to_thread(
        instance.start,
        paths,
        inst.namespace,
        _INSTANCE_IFACE,
        Datasource(inst.datasource),
        inst.server_id,
    )
    return inst


async def _boot_vm(config: Config, state: LabState, inst: LabInstance, vm: VmOptions) -> None:
    """Plug a tap ``tap<port id>`` on the network's bridge (port security applies to it as to a
    namespace instance's veth) and start QEMU with the port's MAC on it."""
    bridge = bridge_name(config.device_prefix, inst.network_id)
    if bridge not in state.bridges:
        state.bridges.append(bridge)
        save_state(config, state)
    fabric = bridge_namespace(config)
    await linux.create_bridge(fabric, bridge)
    await create_tap(fabric, inst.link, bridge=bridge)
    assert inst.mac is not None
    await _wait_port_served(config, inst.network_id, inst.mac)
    await vm_driver.start(
        instance_paths(config, inst.name).dir,
        name=inst.name,
        server_id=inst.server_id,
        image=vm.image,
        accel=vm.accel,
        namespace=fabric,
        tap=inst.link,
        mac=inst.mac,
        memory_mb=vm.memory_mb,
        cdrom=vm.cdrom,
        ec2=inst.datasource == Datasource.EC2.value,
    )


async def wait_booted(config: Config, inst: LabInstance, timeout: float | None = None) -> str:  # noqa: ASYNC109
    """``ok``/``failed`` once the instance (namespace or VM) finished booting."""
    paths = instance_paths(config, inst.name)
    if inst.vm:
        return await vm_driver.wait_booted(paths.dir, timeout or 480.0)
    return await instance.wait_booted(paths, timeout or 180.0)


def last_step(config: Config, inst: LabInstance) -> str | None:
    paths = instance_paths(config, inst.name)
    return vm_driver.last_step(paths.dir) if inst.vm else instance.last_step(paths)


async def _wait_port_served(
    config: Config,
    network_id: str,
    mac: str,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Nova's wait for ``network-vif-plugged``: boot once the network's dnsmasq lists the port.

    Booting earlier makes the instance's first DHCPDISCOVER go unanswered. Only the DHCP agent
    of this state dir is watched; after ``timeout`` the boot goes on (dhclient retries).
    """
    if not (config.state_path / "dhcp").is_dir():
        return
    hosts = DnsmasqFiles(config.state_path / "dhcp" / network_id).host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if mac.lower() in hosts.read_text().lower():
                return
        await asyncio.sleep(0.1)


async def metadata_next_hop(client: AdminClient, inst: LabInstance) -> tuple[str | None, str]:
    """Where the instance's packets to 169.254.169.254 go, and which path that is."""
    try:
        routes = await linux.list_routes(inst.namespace)
    except linux.LinuxError:
        return None, "-"
    by_dest = {r.destination: r.via for r in routes}
    hop = by_dest.get("169.254.169.254/32") or by_dest.get("default")
    if hop is None:
        return None, "-"
    ports = await client.list_ports(network_id=inst.network_id, ip_address=hop)
    owners = {p["device_owner"] for p in ports}
    return hop, "dhcp" if "network:dhcp" in owners else "router"


async def instance_row(client: AdminClient, config: Config, inst: LabInstance) -> dict[str, Any]:
    """One line of ``lab status`` (the JSON fields of the issue)."""
    if inst.vm:
        return await _vm_row(client, config, inst)
    facts = await instance.facts(instance_paths(config, inst.name), repo.PACKAGE)
    hop, path = await metadata_next_hop(client, inst)
    return {
        "name": inst.name,
        "server_id": inst.server_id,
        "network": inst.network,
        "ip": inst.ip,
        "metadata_next_hop": hop,
        "path": path,
        "hostname": facts.hostname,
        "password_set": facts.password_set,
        "package": facts.package,
        "result": facts.result,
        "boot_seconds": facts.boot_seconds,
        "errors": facts.errors,
    }


async def _vm_row(client: AdminClient, config: Config, inst: LabInstance) -> dict[str, Any]:
    """A VM's line: the facts of its boot report on the serial console."""
    facts = vm_driver.facts(instance_paths(config, inst.name).dir, repo.PACKAGE)
    hop, path = facts.metadata_next_hop, "-"
    if hop is not None:
        ports = await client.list_ports(network_id=inst.network_id, ip_address=hop)
        path = "dhcp" if "network:dhcp" in {p["device_owner"] for p in ports} else "router"
    return {
        "name": inst.name,
        "server_id": inst.server_id,
        "network": inst.network,
        "ip": inst.ip,
        "metadata_next_hop": hop,
        "path": path,
        "hostname": facts.hostname,
        "password_set": facts.password_set,
        "package": facts.package,
        "result": facts.result,
        "boot_seconds": facts.boot_seconds,
        "errors": facts.errors,
    }


async def kill_instance(
    config: Config, client: AdminClient | None, state: LabState, name: str
) -> None:
    """Stop one instance, unplug it, delete its server; idempotent."""
    inst = state.instances.get(name)
    if inst is not None and inst.vm:
        await vm_driver.kill(instance_paths(config, name).dir)
    await instance.kill(instance_paths(config, name))
    if inst is None:
        return
    await cleanup(
        namespaces=[inst.namespace] if inst.namespace else [],
        links=[inst.link],
        links_namespace=bridge_namespace(config),
    )
    if inst.namespace in state.namespaces:
        state.namespaces.remove(inst.namespace)
    if client is not None:
        with contextlib.suppress(AdminError):
            await client.delete_server(inst.server_id)
    del state.instances[name]
    save_state(config, state)


async def down(config: Config, state: LabState, client: AdminClient | None) -> None:
    """Remove everything the lab made (idempotent; works from a half-written state).

    A network made with the CLI keeps its agents' namespace and bridge, unless the lab stops
    the all-in-one it started (then nothing of the lab's services may outlive it).
    """
    for name in list(state.instances):
        await kill_instance(config, client, state, name)
    ours = [n.id for n in state.networks.values() if n.owned or state.all_in_one_pid]
    agent_namespaces = [f"{config.namespace_prefix}qdhcp-{n}" for n in ours]
    if state.router_id:
        agent_namespaces.append(router_namespace(config.namespace_prefix, state.router_id))
    if client is not None and await _api_up(client):
        await _delete_resources(client, state)
        # The agents undo their part (dnsmasq, proxies, namespaces, files) on the deletions;
        # what they have not undone in time is removed below.
        await _wait_gone(agent_namespaces, timeout=5.0)
    if state.all_in_one_pid:
        await stop_pid(state.all_in_one_pid, timeout=10)
    repo_namespaces = [n.repo_namespace for n in state.networks.values() if n.repo_namespace]
    links = [n.repo_link for n in state.networks.values() if n.repo_link]
    # A network's bridge exists once its DHCP port is plugged, before the lab plugs anything.
    bridges = {bridge_name(config.device_prefix, n) for n in ours}
    foreign = {bridge_name(config.device_prefix, n) for n in state.networks} - bridges
    fabric = bridge_namespace(config)
    await cleanup(
        namespaces=[*state.namespaces, *repo_namespaces, *agent_namespaces],
        links=[*links, *sorted((bridges | set(state.bridges)) - foreign)],
        links_namespace=fabric,
    )
    if state.all_in_one_pid:
        await cleanup(namespaces=[fabric])  # the lab's own fabric, with anything left in it
    await asyncio.to_thread(_remove_agent_files, config, [*ours, state.router_id])
    await asyncio.to_thread(shutil.rmtree, lab_dir(config), True)


async def _wait_gone(namespaces: list[str], timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(namespaces) & set(linux.list_namespaces()):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


def _remove_agent_files(config: Config, ids: list[str | None]) -> None:
    """Files an agent stopped too early left for the lab's networks and router."""
    for found in filter(None, ids):
        shutil.rmtree(config.state_path / "dhcp" / found, ignore_errors=True)
        for pid_file in (config.state_path / "external" / "pids").glob(f"*/{found}.pid"):
            pid_file.unlink(missing_ok=True)


async def _delete_resources(client: AdminClient, state: LabState) -> None:
    """Best effort: the API objects of the lab, so a shared all-in-one is left as it was."""
    calls: list[Any] = []
    for net in state.networks.values():
        if net.repo_port_id:
            calls.append(client.delete_port(net.repo_port_id))
    if state.router_id:
        for net in state.networks.values():
            if net.subnet_id:
                calls.append(client.remove_router_interface(state.router_id, net.subnet_id))
    for call in calls:
        with contextlib.suppress(AdminError):
            await call
    deletions: list[Any] = []
    if state.router_id:
        deletions.append(client.delete_router(state.router_id))
    deletions += [client.delete_network(n.id) for n in state.networks.values() if n.owned]
    if state.keypair_id:
        deletions.append(client.delete_keypair(state.keypair_id))
    if state.project_id:
        deletions.append(client.delete_project(state.project_id))
    for call in deletions:
        with contextlib.suppress(AdminError):
            await call
