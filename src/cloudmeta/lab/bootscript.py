"""The script that is an instance's "firmware + init": pure text, written next to the instance.

It runs as pid 1 of the instance's own pid namespace, in its own UTS and mount namespaces
(``unshare``), inside the instance's network namespace. It mounts an overlay of the host's ``/``
with the instance's upper dir, gives it its own ``/proc``, ``/dev`` (rbind), ``/sys``, ``/run``
and ``/tmp``, then runs, chrooted there, Debian's ``dhclient`` (its ``dhclient-script`` and
rfc3442 hook then write only the overlay's ``/etc/resolv.conf``) and the three stages of
cloud-init. Every step is appended to ``steps`` (``<epoch> <step> <rc>``) so the host can follow
the boot; ``status`` holds ``ok`` or ``failed`` at the end. It then stays alive as the instance's
anchor (its pid namespace and mounts live as long as it does) until it is killed.
"""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

__all__ = ["BOOT_STEPS", "boot_script", "ec2_hypervisor_uuid", "instance_env"]

BOOT_STEPS = ("mount", "dhcp", "init", "config", "final")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What Nova's SMBIOS tells a real guest; cloud-init reads it from pid 1's environment when
# there is no DMI (its container case), which is how it recognises OpenStack here.
_NOVA_PRODUCT = "OpenStack Nova"


def instance_env(openstack: bool) -> dict[str, str]:
    """The environment of the instance's pid 1 (and so of everything it runs)."""
    env = {"PATH": _PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
    if openstack:
        env["product_name"] = _NOVA_PRODUCT
    return env


def ec2_hypervisor_uuid(server_id: str) -> str:
    """What a Xen/Nitro EC2 guest reads in ``/sys/hypervisor/uuid``: ``ec2`` then its uuid.

    cloud-init's Ec2 datasource only takes the IMDSv2 token path on a platform it identifies as
    AWS, and with no DMI the one way it does so is a hypervisor uuid starting with ``ec2``.
    """
    return "ec2" + uuid.UUID(server_id).hex


def _sys_mounts(hypervisor_uuid: str | None) -> str:
    """Shell that gives the root its own ``/sys``, with a ``hypervisor/uuid`` when one is given.

    A sysfs cannot hold a file of ours, so the instance then gets a tmpfs ``/sys`` holding bind
    mounts of a fresh sysfs's directories (this namespace's view) plus ``hypervisor/uuid``.
    """
    if hypervisor_uuid is None:
        return 'mount_sys() { mount -t sysfs sysfs "$R/sys"; }'
    value = shlex.quote(hypervisor_uuid)
    return (
        "mount_sys() {\n"
        '    mkdir -p "$D/sysfs" && mount -t sysfs sysfs "$D/sysfs" \\\n'
        '      && mount -t tmpfs -o mode=0755 cmt-sys "$R/sys" || return 1\n'
        '    for e in "$D"/sysfs/*; do\n'
        '        n=${e##*/}; [ "$n" = hypervisor ] && continue\n'
        '        mkdir "$R/sys/$n" && mount --rbind "$e" "$R/sys/$n" || return 1\n'
        "    done\n"
        f'    mkdir "$R/sys/hypervisor" && echo {value} > "$R/sys/hypervisor/uuid"\n'
        "}"
    )


def _ipv6_setup(interface: str, mode: str, timeout: int) -> str:
    """Shell that gives ``interface`` its IPv6 address the way a guest OS does for ``mode``.

    The kernel does SLAAC (``accept_ra``, ``autoconf``: the instance's own network namespace,
    so these sysctls are its own) from the DHCP namespace's router advertisements; DHCPv6 is
    Debian's ``dhclient -6``, chrooted like the IPv4 one, so its ``dhclient-script`` writes only
    the overlay's ``/etc`` (``-S``: options only, for DHCPv6-stateless). Done once the
    interface has a global address that is no longer tentative (DAD over)."""
    iface = shlex.quote(interface)
    sysctl = f"/proc/sys/net/ipv6/conf/{interface}"
    lines = [
        f"echo 1 > {shlex.quote(sysctl + '/accept_ra')} && "
        f"echo 1 > {shlex.quote(sysctl + '/autoconf')} || v6=1",
    ]
    # dhclient -6 binds the link-local address: while DAD still runs on it, "Can't bind to
    # dhcp address: Cannot assign requested address" and it exits (seen here at boot).
    lines.append(_wait_address(iface, "link", timeout))
    dhclient6 = "-pf /run/dhclient6.pid -lf /var/lib/dhcp/dhclient6.leases"
    if mode == "dhcpv6-stateful":
        lines.append(
            f'timeout {timeout} chroot "$R" dhclient -6 -1 -v {dhclient6} {iface} '
            '>> "$D/console.log" 2>&1 || v6=1'
        )
    elif mode == "dhcpv6-stateless":
        lines.append(
            f'timeout {timeout} chroot "$R" dhclient -6 -S -1 -v {dhclient6} {iface} '
            '>> "$D/console.log" 2>&1 || v6=1'
        )
    lines.append(_wait_address(iface, "global", timeout))
    return "v6=0\n" + "\n".join(lines) + "\n"


def _wait_address(iface: str, scope: str, timeout: int) -> str:
    """Shell: until ``iface`` has an IPv6 address of ``scope`` past DAD (else ``v6=1``)."""
    return (
        f"n=0; until ip -6 addr show dev {iface} scope {scope} -tentative | grep -q inet6; do\n"
        f"    n=$((n + 1)); [ $n -gt {timeout * 5} ] && {{ v6=1; break; }}; sleep 0.2\n"
        "done"
    )


def boot_script(
    instance_dir: Path,
    interface: str,
    dhcp_timeout: int = 30,
    hypervisor_uuid: str | None = None,
    *,
    ipv4: bool = True,
    ipv6_mode: str | None = None,
) -> str:
    """The boot script for the instance whose files live in ``instance_dir``.

    ``ipv4``: take an IPv4 lease with dhclient; ``ipv6_mode``: the IPv6 subnet's address mode
    (``slaac``, ``dhcpv6-stateful``, ``dhcpv6-stateless``), None for no IPv6. The ``dhcp`` step
    covers both: it fails if either does."""
    d = shlex.quote(str(instance_dir))
    iface = shlex.quote(interface)
    sys_mounts = _sys_mounts(hypervisor_uuid)
    dhcp4 = "rc=0\n"
    if ipv4:
        dhcp4 = (
            f'timeout {dhcp_timeout} chroot "$R" dhclient -1 -v -pf /run/dhclient.pid \\\n'
            f'    -lf /var/lib/dhcp/dhclient.leases {iface} >> "$D/console.log" 2>&1\n'
            "rc=$?\n"
        )
    dhcp6 = ""
    if ipv6_mode is not None:
        dhcp6 = _ipv6_setup(interface, ipv6_mode, dhcp_timeout) + (
            '[ $v6 -eq 0 ] || { echo "IPv6 ($ipv6_mode): no global address" '
            '>> "$D/console.log"; [ $rc -eq 0 ] && rc=1; }\n'
        ).replace("$ipv6_mode", ipv6_mode)
    return f"""#!/bin/sh
# cloudmeta lab instance: pid 1 of its own pid, UTS and mount namespaces.
set -u
D={d}
R="$D/root"
step() {{ echo "$(date +%s.%N) $1 $2" >> "$D/steps"; }}
finish() {{
    echo "$1" > "$D/status.tmp" && mv "$D/status.tmp" "$D/status"
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
}}
inside() {{ chroot "$R" "$@" >> "$D/console.log" 2>&1; }}
{sys_mounts}

mount -t overlay cmt-lab -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$R" \\
  && mount -t proc proc "$R/proc" \\
  && mount --rbind /dev "$R/dev" \\
  && mount_sys \\
  && mount -t tmpfs -o mode=0755 tmpfs "$R/run" \\
  && mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" \\
  && mkdir -p "$R/run/lock" "$R/var/lib/dhcp" \\
  && mount --bind "$D/dpkg-updates" "$R/var/lib/dpkg/updates"
rc=$?; step mount $rc
[ $rc -eq 0 ] || finish failed
hostname localhost
# No resolver until DHCP names one: a loopback resolver fails at once, where the host's copy
# would make cloud-init's DNS probes wait for timeouts towards an address no lab network reaches.
rm -f "$R/etc/resolv.conf" && echo "nameserver 127.0.0.1" > "$R/etc/resolv.conf"

{dhcp4}{dhcp6}step dhcp $rc
[ $rc -eq 0 ] || finish failed

overall=ok
inside cloud-init init; rc=$?; step init $rc; [ $rc -eq 0 ] || overall=failed
inside cloud-init modules --mode config; rc=$?; step config $rc; [ $rc -eq 0 ] || overall=failed
inside cloud-init modules --mode final; rc=$?; step final $rc; [ $rc -eq 0 ] || overall=failed
finish $overall
"""
