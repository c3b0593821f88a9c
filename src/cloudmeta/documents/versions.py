"""Version lists of both trees (Nova's VERSIONS and OPENSTACK_VERSIONS) and their rules."""

from __future__ import annotations

__all__ = [
    "AWS_EXTENDED_VERSIONS",
    "EC2_VERSIONS",
    "EPOXY",
    "FOLSOM",
    "GRIZZLY",
    "HAVANA",
    "LIBERTY",
    "NEWTON_ONE",
    "NEWTON_TWO",
    "OCATA",
    "OPENSTACK_VERSIONS",
    "ROCKY",
    "VICTORIA",
    "at_least",
    "ec2_listing",
    "ec2_version",
    "openstack_listing",
    "openstack_version",
]

EC2_VERSIONS: tuple[str, ...] = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)

# AWS dates past Nova's last that clients pin (cloud-init's Ec2 datasource on a platform it
# identifies as AWS asks for these, newest first, and reads dynamic/instance-identity there).
# They serve the ``latest`` tree; ``/`` still lists Nova's versions only.
AWS_EXTENDED_VERSIONS: tuple[str, ...] = ("2016-09-02", "2018-09-24", "2021-03-23")

FOLSOM = "2012-08-10"
GRIZZLY = "2013-04-04"
HAVANA = "2013-10-17"
LIBERTY = "2015-10-15"
NEWTON_ONE = "2016-06-30"
NEWTON_TWO = "2016-10-06"
OCATA = "2017-02-22"
ROCKY = "2018-08-27"
VICTORIA = "2020-10-14"
EPOXY = "2025-04-04"

OPENSTACK_VERSIONS: tuple[str, ...] = (
    FOLSOM,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    EPOXY,
)

LATEST = "latest"


def ec2_version(requested: str) -> str | None:
    """The EC2 version a request names (``latest`` is the last), or None if unknown."""
    if requested == LATEST:
        return EC2_VERSIONS[-1]
    return requested if requested in EC2_VERSIONS else None


def openstack_version(requested: str) -> str | None:
    """The OpenStack version a request names; future dates stay requestable, as in Nova."""
    if requested == LATEST:
        return OPENSTACK_VERSIONS[-1]
    return requested if requested in OPENSTACK_VERSIONS else None


def at_least(required: str, version: str, versions: tuple[str, ...] = OPENSTACK_VERSIONS) -> bool:
    """Nova's ``_check_version``: position in the list, not string order."""
    return versions.index(version) >= versions.index(required)


def ec2_listing() -> list[str]:
    return [*EC2_VERSIONS, LATEST]


def openstack_listing(today: str) -> list[str]:
    """Versions dated on or before ``today`` (UTC ``%Y-%m-%d``) plus ``latest``."""
    return [v for v in OPENSTACK_VERSIONS if v <= today] + [LATEST]
