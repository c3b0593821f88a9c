"""Link names as Neutron derives them: a stem plus as much of an id as fits in 15 characters."""

from __future__ import annotations

from cloudmeta.linux.errors import LinuxError

__all__ = ["IFNAMSIZ", "bridge_name", "link_name"]

IFNAMSIZ = 15  # usable characters of a Linux interface name
_MIN_ID_CHARS = 6
_ID_CHARS = 11  # Neutron's RESOURCE_ID_LENGTH


def link_name(device_prefix: str, stem: str, ident: str) -> str:
    """``<device_prefix><stem>`` + up to 11 chars of ``ident``, within 15 characters."""
    head = f"{device_prefix}{stem}"
    room = min(IFNAMSIZ - len(head), _ID_CHARS)
    if room < min(_MIN_ID_CHARS, len(ident)):
        raise LinuxError(
            f"link names '{head}<id>' must fit in {IFNAMSIZ} characters with at least "
            f"{_MIN_ID_CHARS} of the id; shorten the device prefix {device_prefix!r}"
        )
    return head + ident[:room]


def bridge_name(device_prefix: str, network_id: str) -> str:
    """The bridge of a network, as Neutron's linuxbridge agent names it: ``brq`` + the id."""
    return link_name(device_prefix, "brq", network_id)
