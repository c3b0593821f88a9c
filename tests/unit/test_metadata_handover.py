"""The in-process hand-over (all-in-one): the metadata API answers for the identity the agent
of its process found, reads no identity header of the request, and still refuses an identity
whose tenant is not the instance's project. In-memory MetadataSource, no sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import make_mocked_request
from metadata_fakes import FakeSource, instance

from cloudmeta.api.metadata.app import MetadataService
from cloudmeta.config import Config
from cloudmeta.signing import InstanceIdentity

PATH = "/openstack/latest/meta_data.json"


@pytest.fixture
async def service(make_config: Callable[..., Config]) -> AsyncIterator[MetadataService]:
    source = FakeSource(
        [instance("cmt-vm-a", "192.0.2.10", network="net-a"),
         instance("cmt-vm-b", "192.0.2.11", network="net-a")]
    )  # fmt: skip
    service = MetadataService(make_config(), source)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def _spoofing(victim: str) -> object:
    """The instance's request as it came: its own (forged) identity headers, unsigned."""
    headers = {"X-Instance-ID": victim, "X-Tenant-ID": "cmt-other", "X-Forwarded-For": "x"}
    return make_mocked_request("GET", PATH, headers=headers)


async def test_the_handed_identity_is_answered_and_the_headers_are_not_read(
    service: MetadataService,
) -> None:
    project = (await service.cache.entry("cmt-vm-a")).instance.project_id  # type: ignore[union-attr]
    handed = InstanceIdentity("cmt-vm-a", project, "192.0.2.10")
    response = await service.handle(_spoofing("cmt-vm-b"), handed)  # type: ignore[arg-type]
    assert response.status == 200
    assert json.loads(response.body)["uuid"] == "cmt-vm-a"  # type: ignore[arg-type]
    # Without a handed identity the same request is what it is: unsigned, refused.
    unsigned = await service.handle(_spoofing("cmt-vm-b"))  # type: ignore[arg-type]
    assert unsigned.status == 400


async def test_a_handed_identity_of_another_tenant_is_not_found(
    service: MetadataService,
) -> None:
    handed = InstanceIdentity("cmt-vm-a", "cmt-not-its-project", "192.0.2.10")
    response = await service.handle(_spoofing("cmt-vm-a"), handed)  # type: ignore[arg-type]
    assert response.status == 404
