from collections.abc import AsyncIterator

import pytest

from admin.helpers import running_admin
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from inventory.dbfixtures import db_config, store

__all__ = ["admin", "db_config", "store"]


@pytest.fixture
async def admin(db_config: Config) -> AsyncIterator[AdminClient]:
    """A client of a real admin API running on a free port over a fresh database."""
    async with running_admin(db_config) as (_, client):
        yield client
