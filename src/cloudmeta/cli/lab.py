"""``cloudmeta lab up|boot|kill|status|exec|down``: a whole cloud on one host (devstack's job)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.cli.main import pass_config
from cloudmeta.config import Config, ProxyMode
from cloudmeta.lab import cloud, instance, nodes
from cloudmeta.lab.cloud import DEMO_NETWORKS
from cloudmeta.lab.cloudcfg import Datasource
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.state import LabState, load_state, save_state
from cloudmeta.lab.supervise import supervise_all_in_one
from cloudmeta.lab.vm import accel as vm_accel
from cloudmeta.lab.vm import driver as vm_driver
from cloudmeta.lab.vm import image as vm_image
from cloudmeta.lab.vm import runtime as vm_runtime
from cloudmeta.lab.web import DEFAULT_PORT, LabPage, start_page
from cloudmeta.linux import LinuxError

__all__ = ["COMMANDS"]

T = TypeVar("T")
# command -> the Debian package that provides it
_TOOLS = {
    "ip": "iproute2",
    "dnsmasq": "dnsmasq-base",
    "dhclient": "isc-dhcp-client",
    "cloud-init": "cloud-init",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "dpkg-deb": "dpkg",
    "dpkg-scanpackages": "dpkg-dev",
    "curl": "curl",
    "iptables": "iptables",
}
# and for VM instances
_VM_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "xorriso": "xorriso",  # config drives
}
_COLUMNS = (
    ("name", "name"),
    ("host", "host"),
    ("network", "network"),
    ("ip", "IP"),
    ("metadata_next_hop", "169.254.169.254 via"),
    ("path", "path"),
    ("hostname", "hostname inside"),
    ("password_set", "password set"),
    ("package", "package"),
    ("result", "cloud-init"),
    ("boot_seconds", "boot s"),
)
# with `lab up --ipv6`, after "path"
_V6_COLUMNS = (("ip6", "IPv6"), ("path6", "fe80::a9fe:a9fe path"))


def _console() -> Console:
    # Off a terminal (logs, CI) the table keeps its full width instead of 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 180)


def _preflight(proxy_mode: ProxyMode | None = None, *, vm: bool = False) -> None:
    """Root and the Debian tools, or a message that says exactly what to do."""
    if os.geteuid() != 0:
        raise click.ClickException(
            "the lab needs root (network, mount and pid namespaces): run it with sudo"
        )
    tools = dict(_TOOLS)
    if proxy_mode is ProxyMode.HAPROXY:
        tools["haproxy"] = "haproxy"
    if vm:
        tools.update(_VM_TOOLS)
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if missing:
        raise click.ClickException(
            f"missing Debian packages: {', '.join(missing)}; "
            f"install them with: apt-get install -y {' '.join(missing)}"
        )


def _run(config: Config, body: Callable[[AdminClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AdminClient(config) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except (LabError, LinuxError, AdminError) as exc:
        raise click.ClickException(str(exc)) from exc


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "password_set":
        return "yes" if value else "no"
    if key == "result":
        return {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(str(value), str(value))
    return str(value)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="cloudmeta lab")
    columns = list(_COLUMNS)
    if any("ip6" in row for row in rows):
        at = [key for key, _ in columns].index("path") + 1
        columns[at:at] = _V6_COLUMNS
    for _, title in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(key, row.get(key)) for key, _ in columns))
    return table


async def _rows(config: Config, client: AdminClient, state: LabState) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(
            *(cloud.instance_row(client, config, i) for i in state.instances.values())
        )
    )


async def _wait_all(config: Config, state: LabState, console: Console) -> None:
    """A bar for the boots, with each instance's current step."""
    names = list(state.instances)
    insts = state.instances
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("booting", total=len(names))
        waits = {n: asyncio.create_task(cloud.wait_booted(config, insts[n])) for n in names}
        while not all(w.done() for w in waits.values()):
            steps = ", ".join(
                f"{n}:{cloud.last_step(config, insts[n]) or 'start'}"
                for n, w in waits.items()
                if not w.done()
            )
            bar.update(task, completed=sum(w.done() for w in waits.values()), description=steps)
            await asyncio.sleep(0.2)


def _lab_config(config: Config, force_metadata: bool, proxy_mode: str | None) -> Config:
    update: dict[str, Any] = {
        "enable_isolated_metadata": True,
        "bridge_namespace": cloud.bridge_namespace(config),
    }
    if force_metadata:
        update["force_metadata"] = True
    if proxy_mode:
        update["metadata_proxy_mode"] = ProxyMode(proxy_mode)
    return config.model_copy(update=update)


async def _start_page(
    config: Config, client: AdminClient, state: LabState, port: int, say: Callable[[str], None]
) -> LabPage | None:
    """The live page, or a line saying why not (a taken port does not stop the lab)."""
    try:
        page = await start_page(config, client, state, port)
    except OSError as exc:
        say(f"[yellow]page: not served on 127.0.0.1:{port}[/] ({exc.strerror}); try --web-port")
        return None
    say(f"page: {page.url} (live while `lab up` runs)")
    return page


@click.group("lab")
def lab_group() -> None:
    """A whole cloud on one host: instances are namespaces booting real DHCP and cloud-init."""


@lab_group.command("up")
@click.option(
    "--instances",
    "count",
    type=click.IntRange(0, 64),
    default=None,
    help="Namespace instances [default: 2, or 0 with --vms].",
)
@click.option("--vms", type=click.IntRange(0, 16), default=0, help="QEMU guests to boot too.")
@click.option(
    "--network-nodes",
    type=click.IntRange(0, 8),
    default=0,
    help="A multi-node lab: this many network nodes (DHCP agents; the first one: L3 agent).",
)
@click.option(
    "--compute-nodes",
    type=click.IntRange(0, 8),
    default=0,
    help="A multi-node lab: this many compute nodes (instances, metadata localports).",
)
@click.option(
    "--metadata-path",
    type=click.Choice(["localport", "dhcp"]),
    default="localport",
    show_default=True,
    help="A multi-node lab's metadata: on each compute node, or through the network nodes "
    "as Neutron does (its DHCP ports and routers; to compare what losing one costs).",
)
@click.option("--memory", type=click.IntRange(256, 65536), default=512, show_default=True)
@click.option("--force-metadata", is_flag=True, help="Metadata through DHCP on every network.")
@click.option(
    "--ipv6",
    is_flag=True,
    help="Dual-stack networks (DHCPv6-stateful, -stateless) and an IPv6-only one (SLAAC).",
)
@click.option("--proxy-mode", type=click.Choice([m.value for m in ProxyMode]), default=None)
@click.option("--once", is_flag=True, help="Tear down after the table; exit 0 only if all ok.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option("--web/--no-web", default=True, show_default=True, help="Serve the live lab page.")
@click.option("--web-port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@pass_config
def up_command(
    config: Config,
    count: int | None,
    vms: int,
    network_nodes: int,
    compute_nodes: int,
    metadata_path: str,
    memory: int,
    force_metadata: bool,
    ipv6: bool,
    proxy_mode: str | None,
    once: bool,
    report: Path | None,
    web: bool,
    web_port: int,
) -> None:
    """Start the services, build the demo cloud, boot COUNT instances, print the table."""
    if ipv6 and (network_nodes or compute_nodes):
        # Not built: the compute nodes' localports answer 169.254.169.254 only, and the
        # multi-node lab's IPv6 on the network nodes' paths has never been run.
        raise click.UsageError(
            "--ipv6 is for the one-host lab (not with --network-nodes/--compute-nodes)"
        )
    _preflight(ProxyMode(proxy_mode) if proxy_mode else None, vm=vms > 0)
    count = (0 if vms else 2) if count is None else count
    multinode = bool(network_nodes or compute_nodes)
    if multinode:
        network_nodes, compute_nodes = max(network_nodes, 1), max(compute_nodes, 1)
    config = _lab_config(config, force_metadata, proxy_mode)
    console = _console()
    say: Callable[[str], None] = lambda line: console.print(f"[bold]lab[/] {line}")  # noqa: E731

    async def body(client: AdminClient) -> list[dict[str, Any]] | None:
        state = load_state(config)
        if state is not None and cloud.lab_running(state):
            say(f"a lab is already running (`lab up`, pid {state.owner_pid}); its status:")
            console.print(_table(await _rows(config, client, state)))
            say("`cloudmeta lab down` removes it")
            return None
        if state is not None:
            say("cleaning up what an earlier lab left")
            await cloud.down(config, state, client)
        # Ctrl-C, SIGTERM or a closed terminal end the lab through the teardown below (and
        # work even when SIGINT came ignored, as for a job started in the background).
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        state = LabState(owner_pid=os.getpid())
        save_state(config, state)
        watches: list[asyncio.Task[None]] = []
        page: LabPage | None = None
        try:
            if multinode:  # every service restarted when it crashes, as systemd would
                watches = await nodes.start_nodes(
                    config,
                    state,
                    network_nodes,
                    compute_nodes,
                    say,
                    distributed=metadata_path == "localport",
                )
            elif (aio := await cloud.ensure_all_in_one(config, client, state, say)) is not None:
                watches.append(  # ours: restarted when it crashes, as systemd would
                    asyncio.create_task(
                        supervise_all_in_one(
                            cloud.aio_config(config),
                            state,
                            aio,
                            lambda p: cloud.wait_all_in_one(config, client, p),
                            say,
                        )
                    )
                )
            if web:
                page = await _start_page(config, client, state, web_port, say)
            await cloud.build_cloud(config, client, state, say, ipv6=ipv6)
            by_name = {n.name: n.id for n in state.networks.values()}
            order = cloud.demo_network_names(ipv6)
            hosts = cloud.compute_nodes(state)
            for i in range(count):
                name = f"lab-{i + 1}"
                network = order[i % len(order)]
                # Both networks on each compute node, then the next node.
                host = hosts[(i // len(order)) % len(hosts)] if hosts else None
                inst = await cloud.boot_instance(
                    config, client, state, name, by_name[network], host=host
                )
                where = f" on {host}" if host else ""
                shown = inst.ip if inst.ip6 in (None, inst.ip) else f"{inst.ip} {inst.ip6}"
                say(f"instance {name}{where} on {network}: {shown} ({inst.mac}), booting")
            if vms:
                await _boot_vms(config, client, state, vms, memory, say)
            await _wait_all(config, state, console)
            rows = await _rows(config, client, state)
            console.print(_table(rows))
            if report is not None:
                report.write_text(json.dumps(rows, indent=2))  # noqa: ASYNC240
            for row in rows:
                for error in row["errors"]:
                    say(f"[red]{row['name']}[/]: {error}")
                if row["result"] != "ok":
                    kept = cloud.keep_logs(config, row["name"])
                    say(f"[red]{row['name']}[/]: its logs are kept in {kept}")
            if not once:
                say("up; Ctrl-C tears it down")
                await asyncio.Event().wait()
            return rows
        finally:
            for watch in watches:
                watch.cancel()
            if page is not None:
                await page.close()
            say("tearing down")
            await asyncio.shield(cloud.down(config, state, client))

    try:
        rows = _run(config, body)
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
    if rows is not None and not all(r["result"] == "ok" for r in rows):
        sys.exit(1)


async def _boot_vms(
    config: Config,
    client: AdminClient,
    state: LabState,
    count: int,
    memory: int,
    say: Callable[[str], None],
) -> None:
    """``count`` QEMU guests ``lab-vm-N``, spread over the demo networks as the others are."""
    options = await vm_runtime.prepare(config.image_cache_path, memory_mb=memory, say=say)
    by_name = {n.name: n.id for n in state.networks.values()}
    order = list(DEMO_NETWORKS)
    for i in range(count):
        name = f"lab-vm-{i + 1}"
        network = order[i % len(order)]
        inst = await cloud.boot_instance(config, client, state, name, by_name[network], vm=options)
        say(f"VM {name} on {network}: {inst.ip} ({inst.mac}), QEMU started")


def _require_state(config: Config) -> LabState:
    state = load_state(config)
    if state is None:
        raise click.ClickException("no lab here: start one with `cloudmeta lab up`")
    return state


@lab_group.command("boot")
@click.argument("name")
@click.option("--network", required=True, help="Network name or id.")
@click.option("--fixed-ip", default=None)
@click.option("--user-data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE")
@click.option("--datasource", type=click.Choice([d.value for d in Datasource]), default="OpenStack")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--vm", is_flag=True, help="Boot a QEMU guest instead of a namespace.")
@click.option(
    "--image",
    "image_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A qcow2/raw cloud image of yours (--vm; default: the lab's own image).",
)
@click.option("--memory", type=click.IntRange(256, 65536), default=512, show_default=True)
@click.option("--host", default=None, help="Compute node of a multi-node lab [default: the first].")
@click.option(
    "--config-drive",
    is_flag=True,
    help="Attach a config drive (--vm): an ISO labelled config-2 with the server's metadata.",
)
@pass_config
def boot_command(
    config: Config,
    name: str,
    network: str,
    fixed_ip: str | None,
    user_data: Path | None,
    properties: tuple[str, ...],
    datasource: str,
    wait: bool,
    vm: bool,
    image_file: Path | None,
    memory: int,
    host: str | None,
    config_drive: bool,
) -> None:
    """Create server NAME on NETWORK and boot it as a lab instance (``--vm``: a QEMU guest),
    on compute node ``--host`` of a multi-node lab."""
    _preflight(vm=vm)
    if image_file is not None and not vm:
        raise click.UsageError("--image needs --vm")
    if config_drive and not vm:
        raise click.UsageError("--config-drive needs --vm (a namespace instance has no drives)")
    say: Callable[[str], None] = lambda line: click.echo(f"lab {line}", err=True)  # noqa: E731
    props = dict(p.split("=", 1) for p in properties if "=" in p)
    text = user_data.read_text() if user_data else None

    async def body(client: AdminClient) -> dict[str, Any] | None:
        state = load_state(config) or LabState()
        nets = await client.list_networks()
        match = [n for n in nets if network in (n["id"], n["name"])]
        if len(match) != 1:
            raise LabError(f"network {network!r} matches {len(match)} networks; give its id")
        options = None
        if vm:
            options = await vm_runtime.prepare(
                config.image_cache_path, image_file, memory_mb=memory, say=say
            )
        await cloud.boot_instance(
            config,
            client,
            state,
            name,
            match[0]["id"],
            fixed_ip=fixed_ip,
            user_data=text,
            properties=props,
            datasource=Datasource(datasource),
            vm=options,
            config_drive=config_drive,
            host=host,
        )
        if not wait:
            return None
        await cloud.wait_booted(config, state.instances[name])
        return await cloud.instance_row(client, config, state.instances[name])

    row = _run(config, body)
    if row is not None:
        _console().print(_table([row]))
        if row["result"] != "ok":
            sys.exit(1)


@lab_group.command("kill")
@click.argument("name")
@pass_config
def kill_command(config: Config, name: str) -> None:
    """Stop instance NAME and delete its server."""
    _preflight()
    state = _require_state(config)
    if name not in state.instances:
        raise click.ClickException(f"no lab instance {name}")
    _run(config, lambda client: cloud.kill_instance(config, client, state, name))


@lab_group.command("kill-node")
@click.argument("name")
@pass_config
def kill_node_command(config: Config, name: str) -> None:
    """Lose node NAME of a multi-node lab: kill -9 all its processes, delete its namespaces
    (bridges, VXLAN, underlay port); the lab does not restart it."""
    _preflight()
    state = _require_state(config)
    at = _run(config, lambda _client: nodes.kill_node(config, state, name))
    click.echo(f"node {name} gone at {datetime.fromtimestamp(at, UTC).isoformat()}")


@lab_group.command("status")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_config
def status_command(config: Config, fmt: str) -> None:
    """The table of instances (``-f json``: a list of objects)."""
    state = load_state(config) or LabState()

    async def body(client: AdminClient) -> list[dict[str, Any]]:
        return await _rows(config, client, state)

    rows = _run(config, body)
    if fmt == "json":
        for row in rows:
            row.pop("errors", None)
        click.echo(json.dumps(rows, indent=2))
    else:
        _console().print(_table(rows))


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_config
def exec_command(config: Config, name: str, argv: tuple[str, ...]) -> None:
    """Run a command inside instance NAME: ``cloudmeta lab exec lab-1 -- curl ...``."""
    _preflight()
    state = load_state(config)
    found = state.instances.get(name) if state else None
    if found is not None and found.vm:
        sys.exit(_exec_vm(config, name, argv))
    try:
        full = instance.exec_argv(cloud.instance_paths(config, name), argv)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(subprocess.call(full))


def _exec_vm(config: Config, name: str, argv: tuple[str, ...]) -> int:
    """``argv`` in the guest through its qemu-guest-agent; its output and exit code as ours."""
    try:
        done = asyncio.run(vm_driver.exec_in(cloud.instance_paths(config, name).dir, argv))
    except (LabError, TimeoutError) as exc:
        raise click.ClickException(str(exc) or "the guest agent did not answer in time") from exc
    sys.stdout.buffer.write(done.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(done.stderr)
    return done.exitcode


@lab_group.command("down")
@pass_config
def down_command(config: Config) -> None:
    """Remove every namespace, link, bridge, process and file the lab made (idempotent)."""
    _preflight()
    state = load_state(config)
    if state is None:
        if not cloud.lab_exists(config):
            click.echo("no lab to remove")
            return
        state = LabState()  # no record, but debris: its pid files and names lead the sweep
    _run(config, lambda client: cloud.down(config, state, client))
    click.echo("lab removed")


@lab_group.group("image")
def image_group() -> None:
    """The lab's VM image (Debian bookworm, built here with mmdebstrap, cached by recipe)."""


@image_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the recipe's image is cached.")
@pass_config
def image_build_command(config: Config, force: bool) -> None:
    """Build the lab's VM image into the cache (once per recipe)."""
    _preflight(vm=True)
    cache = config.image_cache_path
    console = _console()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())

    async def body() -> vm_image.CachedImage:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("image", total=None)

            def step(line: str) -> None:
                console.print(f"[bold]image[/] {line}")
                bar.update(task, description=line[:100])

            def detail(line: str) -> None:
                bar.update(task, description=line[:100])

            built = await vm_image.build_image(cache, force=force, say=step, on_line=detail)
            accel = await vm_accel.accelerator(cache, built)
            console.print(f"[bold]image[/] {vm_accel.describe(accel)}")
            return built

    try:
        built = asyncio.run(body())
    except (LabError, LinuxError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{built.dir} ({_size(built.size)}, recipe {built.recipe_hash[:12]})")


def _size(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


@image_group.command("list")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_config
def image_list_command(config: Config, fmt: str) -> None:
    """The images in the cache: size, date, recipe hash (current: what `lab boot --vm` uses)."""
    current = vm_image.RECIPE.digest()
    images = vm_image.list_images(config.image_cache_path)
    rows: list[dict[str, Any]] = [
        {
            "name": i.name,
            "path": str(i.dir),
            "size": i.size,
            "created": datetime.fromtimestamp(i.created, UTC).isoformat(timespec="seconds"),
            "recipe_hash": i.recipe_hash,
            "current": i.recipe_hash == current,
        }
        for i in images
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"VM images in {config.image_cache_path}")
    for title in ("name", "size", "built (UTC)", "recipe hash", "current", "path"):
        table.add_column(title)
    for row in rows:
        table.add_row(
            str(row["name"]),
            _size(int(row["size"])),
            str(row["created"]),
            str(row["recipe_hash"])[:12],
            "yes" if row["current"] else "no",
            str(row["path"]),
        )
    _console().print(table)


COMMANDS: list[click.Command] = [lab_group]
