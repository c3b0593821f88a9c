"""Pure rules of the inventory: address arithmetic, MACs, key fingerprints, Nova's limits.

Nothing here touches the database; every function raises :class:`Invalid` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import itertools
import re
import secrets
from collections.abc import Iterable, Iterator

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from cloudmeta.inventory.errors import Invalid

__all__ = [
    "MAX_METADATA_ITEMS",
    "MAX_METADATA_KEY",
    "MAX_METADATA_VALUE",
    "MAX_PASSWORD",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "MAX_USER_DATA",
    "IPAddress",
    "IPNetwork",
    "check_gateway",
    "check_ipv6_modes",
    "check_metadata",
    "check_pools",
    "check_tags",
    "check_user_data",
    "default_pools",
    "eui64_address",
    "first_free",
    "in_pools",
    "is_auto_address",
    "keypair_fingerprint",
    "normalize_mac",
    "parse_cidr",
    "parse_ip",
    "random_mac",
    "sanitize_hostname",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Nova's API limits (compute schemas): base64 user_data length, metadata items and lengths.
MAX_USER_DATA = 65535
MAX_METADATA_ITEMS = 128
MAX_METADATA_KEY = 255
MAX_METADATA_VALUE = 255
MAX_TAGS = 50
MAX_TAG_LENGTH = 60
# Nova's password slot: four system_metadata chunks of 255 characters.
MAX_PASSWORD = 1020

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MAC_PREFIX = "fa:16:3e"


def parse_cidr(value: str, field: str = "cidr") -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise Invalid(f"{field}: {value!r} is not a valid CIDR (e.g. 192.0.2.0/24)") from None
        raise Invalid(f"{field}: {value!r} has host bits set; did you mean {loose}?") from None


def parse_ip(value: str, field: str = "ip_address") -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(f"{field}: {value!r} is not a valid IP address") from None


def _host_range(net: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """First and last assignable addresses: no network address, no IPv4 broadcast."""
    if net.version == 4 and net.prefixlen >= 31:
        return net[0], net[-1]
    last = net[-2] if net.version == 4 else net[-1]
    return net[1], last


def check_gateway(net: IPNetwork, gateway: IPAddress, field: str = "gateway_ip") -> None:
    low, high = _host_range(net)
    if gateway.version != net.version or gateway not in net:
        raise Invalid(f"{field}: {gateway} is outside the subnet {net}")
    if not int(low) <= int(gateway) <= int(high):
        raise Invalid(f"{field}: {gateway} is the network or broadcast address of {net}")


def default_pools(net: IPNetwork, gateway: IPAddress | None) -> list[dict[str, str]]:
    """The whole subnet minus the network address, the broadcast and the gateway."""
    low, high = _host_range(net)
    if gateway is None or gateway not in net or not int(low) <= int(gateway) <= int(high):
        return [{"start": str(low), "end": str(high)}]
    pools = []
    if int(gateway) > int(low):
        pools.append({"start": str(low), "end": str(gateway - 1)})
    if int(gateway) < int(high):
        pools.append({"start": str(gateway + 1), "end": str(high)})
    return pools


def check_pools(
    net: IPNetwork, pools: Iterable[dict[str, str]], gateway: IPAddress | None
) -> list[dict[str, str]]:
    """Validate explicit pools: inside the subnet, ordered, not overlapping, no gateway."""
    low, high = int(_host_range(net)[0]), int(_host_range(net)[1])
    ranges: list[tuple[int, int]] = []
    for pool in pools:
        start = parse_ip(pool["start"], "allocation_pools.start")
        end = parse_ip(pool["end"], "allocation_pools.end")
        if start.version != net.version or end.version != net.version:
            raise Invalid(f"allocation_pools: {start}-{end} is not an IPv{net.version} range")
        if not (low <= int(start) <= high and low <= int(end) <= high):
            raise Invalid(f"allocation_pools: {start}-{end} is not inside {net}'s host range")
        if int(start) > int(end):
            raise Invalid(f"allocation_pools: start {start} is after end {end}")
        if gateway is not None and int(start) <= int(gateway) <= int(end):
            raise Invalid(f"allocation_pools: {start}-{end} contains the gateway {gateway}")
        ranges.append((int(start), int(end)))
    ranges.sort()
    for (_, end_int), (start_int, _) in itertools.pairwise(ranges):
        if start_int <= end_int:
            raise Invalid(f"allocation_pools: pools overlap at {ipaddress.ip_address(start_int)}")
    if not ranges:
        raise Invalid("allocation_pools: give at least one pool or none at all")
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    return [{"start": str(make(s)), "end": str(make(e))} for s, e in ranges]


def _pool_addresses(pools: Iterable[dict[str, str]]) -> Iterator[IPAddress]:
    for pool in pools:
        address = ipaddress.ip_address(pool["start"])
        end = int(ipaddress.ip_address(pool["end"]))
        while int(address) <= end:
            yield address
            address += 1


def first_free(pools: Iterable[dict[str, str]], used: set[IPAddress]) -> IPAddress | None:
    """The first address of the pools not in ``used`` (stops early: ``used`` is finite)."""
    for address in _pool_addresses(pools):
        if address not in used:
            return address
    return None


def in_pools(pools: Iterable[dict[str, str]], address: IPAddress) -> bool:
    return any(
        int(ipaddress.ip_address(p["start"])) <= int(address) <= int(ipaddress.ip_address(p["end"]))
        for p in pools
        if ipaddress.ip_address(p["start"]).version == address.version
    )


_AUTO_MODES = frozenset({"slaac", "dhcpv6-stateless"})


def is_auto_address(address_mode: str | None, ra_mode: str | None) -> bool:
    """Neutron's ``is_auto_address_subnet``: the instance makes its own address (SLAAC)."""
    return address_mode in _AUTO_MODES or ra_mode in _AUTO_MODES


def check_ipv6_modes(
    net: IPNetwork, address_mode: str | None, ra_mode: str | None, enable_dhcp: bool
) -> None:
    """Neutron's checks of ``ipv6_address_mode`` / ``ipv6_ra_mode`` (db_base_plugin_v2)."""
    if address_mode is None and ra_mode is None:
        return
    if net.version != 6:
        name = "ipv6_ra_mode" if ra_mode is not None else "ipv6_address_mode"
        raise Invalid(f"{name}: not valid when ip_version is 4")
    if not enable_dhcp:
        raise Invalid(
            "enable_dhcp: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp "
            "is set to False"
        )
    if address_mode is not None and ra_mode is not None and address_mode != ra_mode:
        raise Invalid(
            f"ipv6_ra_mode: set to {ra_mode!r} with ipv6_address_mode set to {address_mode!r} "
            "is not valid. If both attributes are set, they must be the same value"
        )
    if is_auto_address(address_mode, ra_mode) and net.prefixlen != 64:
        raise Invalid(
            f"cidr: {net} is not valid for IPv6 address mode: OpenStack uses the EUI-64 "
            "address format, which requires the prefix to be /64"
        )


def eui64_address(cidr: str, mac: str) -> ipaddress.IPv6Address:
    """The SLAAC address a host with ``mac`` forms in the /64 ``cidr`` (RFC 4291, app. A)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    iid = bytes([*octets[:3], 0xFF, 0xFE, *octets[3:]])
    net = ipaddress.IPv6Network(cidr)
    return ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big"))


def random_mac() -> str:
    """A MAC in OpenStack's base ``fa:16:3e`` with three random octets."""
    return _MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def normalize_mac(value: str, field: str = "mac_address") -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise Invalid(f"{field}: {value!r} is not a MAC address (e.g. fa:16:3e:00:00:01)")
    if int(mac[:2], 16) & 1:
        raise Invalid(f"{field}: {value!r} is a multicast address")
    return mac


def keypair_fingerprint(public_key: str) -> tuple[str, str]:
    """Validate an OpenSSH public key; return Nova's MD5 fingerprint and the key type."""
    try:
        load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except UnsupportedAlgorithm:
        kind = public_key.split(maxsplit=1)[0][:40] if public_key.split() else ""
        raise Invalid(
            f"public_key: key type {kind!r} is not supported (ssh-rsa, ssh-ed25519, ecdsa-sha2-*)"
        ) from None
    except (ValueError, IndexError, binascii.Error, TypeError):
        raise Invalid(
            "public_key: not an OpenSSH public key (e.g. 'ssh-ed25519 AAAA... me')"
        ) from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2)), "ssh"


def check_user_data(value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_USER_DATA:
        raise Invalid(
            f"user_data: {len(value)} base64 characters, more than Nova's {MAX_USER_DATA}"
        )
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise Invalid("user_data: not valid base64") from None


def check_metadata(meta: dict[str, str]) -> None:
    if len(meta) > MAX_METADATA_ITEMS:
        raise Invalid(f"metadata: {len(meta)} items, more than {MAX_METADATA_ITEMS}")
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise Invalid("metadata: keys and values must be strings")
        if not 1 <= len(key) <= MAX_METADATA_KEY:
            raise Invalid(f"metadata: key {key[:40]!r} must be 1-{MAX_METADATA_KEY} characters")
        if len(value) > MAX_METADATA_VALUE:
            raise Invalid(f"metadata: value of {key!r} is longer than {MAX_METADATA_VALUE}")


def check_tags(tags: list[str]) -> None:
    if len(tags) > MAX_TAGS:
        raise Invalid(f"tags: {len(tags)} tags, more than {MAX_TAGS}")
    for tag in tags:
        if not 1 <= len(tag) <= MAX_TAG_LENGTH or "/" in tag or "," in tag:
            raise Invalid(f"tags: {tag[:70]!r} must be 1-{MAX_TAG_LENGTH} chars without '/' ','")


def sanitize_hostname(name: str) -> str:
    """Nova's ``sanitize_hostname``: a DNS label from a display name."""
    host = re.sub(r"[ _]", "-", name.lower())
    host = re.sub(r"[^\w.-]+", "", host, flags=re.ASCII)
    host = host.strip(".-")[:63].strip(".-")
    return host or "server"
