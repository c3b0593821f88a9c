"""What a lab instance's cloud-init is told: its system config and its user-data (pure).

The system config plays the part of the cloud image's ``/etc/cloud/cloud.cfg``: it lists only
the datasource in use, points it at 169.254.169.254 with short timeouts, and keeps only the
modules that make sense in a namespace (no network apply, no disks, no locale, no ntp). The
user-data is the seed's "typical uses of cloud-init": a hostname, a first password, a package
from the lab's apt repository and a ``runcmd`` marker.

Both are written as JSON, which YAML (cloud-init's format) reads as it is.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_USER",
    "MARKER_FILE",
    "METADATA_URL",
    "METADATA_URL_V6",
    "Datasource",
    "lab_cloud_cfg",
    "lab_dhclient_conf",
    "lab_user_data",
    "metadata_urls",
]

METADATA_URL = "http://169.254.169.254"
# Neutron's IPv6 metadata address, scoped to the instance's interface. Written with a bare
# "%" (RFC 4007), not RFC 6874's "%25": Debian 12's cloud-init 22.4.2 drops a URL whose host
# getaddrinfo() cannot read, and "fe80::a9fe:a9fe%25eth0" is such a host; urllib3 1.26 (its
# HTTP client) takes either form. cloud-init 24.2 asks "%25<iface>" by itself, first.
METADATA_URL_V6 = "http://[fe80::a9fe:a9fe%{iface}]"
DEFAULT_USER = "debian"
MARKER_FILE = "/var/lib/cmt-lab-runcmd"
# A missing or slow metadata path should fail a boot in seconds, not in cloud-init's minutes.
_MAX_WAIT = 20
_TIMEOUT = 3
_RETRIES = 2


class Datasource(StrEnum):
    """cloud-init's datasources the lab can boot with."""

    OPENSTACK = "OpenStack"
    EC2 = "Ec2"


def metadata_urls(*, ipv4: bool = True, ipv6: bool = False, iface: str = "eth0") -> list[str]:
    """The metadata URLs in the order cloud-init asks them: IPv6 first where the instance has
    IPv6 (as cloud-init 24.2+ does), 169.254.169.254 only where it has IPv4."""
    urls = [METADATA_URL_V6.format(iface=iface)] if ipv6 else []
    return urls + ([METADATA_URL] if ipv4 or not urls else [])


def lab_cloud_cfg(datasource: Datasource, urls: list[str] | None = None) -> str:
    """The instance's ``/etc/cloud/cloud.cfg`` (``urls``: the metadata URLs, in order)."""
    ds_cfg: dict[str, Any] = {
        "metadata_urls": urls or [METADATA_URL],
        "max_wait": _MAX_WAIT,
        "timeout": _TIMEOUT,
        "retries": _RETRIES,
    }
    if datasource is Datasource.OPENSTACK:
        ds_cfg["apply_network_config"] = False
    cfg: dict[str, Any] = {
        "datasource_list": [datasource.value],
        "datasource": {datasource.value: ds_cfg},
        # The lab's DHCP already configured the link; cloud-init must not rewrite it.
        "network": {"config": "disabled"},
        "users": ["default"],
        "disable_root": True,
        "preserve_hostname": False,
        "manage_etc_hosts": False,
        # Host keys take seconds to generate and an instance here has no sshd to use them.
        "ssh_genkeytypes": [],
        "ssh_deletekeys": False,
        "apt": {"preserve_sources_list": True},
        "cloud_init_modules": [
            "seed_random",
            "bootcmd",
            "write-files",
            "set_hostname",
            "update_hostname",
            "users-groups",
            "ssh",
        ],
        "cloud_config_modules": ["set-passwords", "apt-configure", "runcmd"],
        "cloud_final_modules": [
            "package-update-upgrade-install",
            "scripts-per-once",
            "scripts-per-boot",
            "scripts-per-instance",
            "scripts-user",
            "final-message",
        ],
        "system_info": {
            "distro": "debian",
            "default_user": {
                "name": DEFAULT_USER,
                "lock_passwd": True,
                "gecos": "Debian",
                "groups": ["adm", "sudo"],
                "sudo": ["ALL=(ALL) NOPASSWD:ALL"],
                "shell": "/bin/bash",
            },
            "paths": {"cloud_dir": "/var/lib/cloud/", "templates_dir": "/etc/cloud/templates/"},
            "ssh_svcname": "ssh",
        },
    }
    return json.dumps(cfg, indent=2) + "\n"


def lab_dhclient_conf() -> str:
    """The image's ``/etc/dhcp/dhclient.conf``: Debian's requests (option 121 among them), with
    retries every second or two instead of dhclient's 3, 6, 12... s, so a DISCOVER sent while
    dnsmasq reloads its hosts costs a second, not three."""
    return (
        "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n"
        "request subnet-mask, broadcast-address, time-offset, routers,\n"
        "\tdomain-name, domain-name-servers, domain-search, host-name,\n"
        "\tinterface-mtu, rfc3442-classless-static-routes;\n"
        "initial-interval 1;\nbackoff-cutoff 2;\ntimeout 25;\n"
    )


def lab_user_data(
    hostname: str,
    password: str,
    repo_url: str | None,
    package: str | None = "cmt-hello",
) -> str:
    """The seed's typical user-data: hostname, first password, a package, a runcmd marker.

    ``repo_url`` is the lab's apt repository; the instance's sources then list only it (the
    host's mirrors are not reachable from a lab network), and apt ignores ``sources.list.d``.
    """
    data: dict[str, Any] = {
        "hostname": hostname,
        "password": password,
        "chpasswd": {"expire": False},
        "ssh_pwauth": "unchanged",
        "runcmd": [["sh", "-c", f"echo {hostname} > {MARKER_FILE}"]],
    }
    if repo_url is not None and package is not None:
        data["apt"] = {
            "preserve_sources_list": False,
            "sources_list": f"deb [trusted=yes] {repo_url} ./\n",
            "conf": 'Dir::Etc::SourceParts "/etc/apt/cmt-lab-sources.list.d";\n',
        }
        data["packages"] = [package]
        data["package_update"] = False
    return "#cloud-config\n" + json.dumps(data, indent=2) + "\n"
