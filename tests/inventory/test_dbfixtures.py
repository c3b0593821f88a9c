"""The PostgreSQL fixture fails, never skips, when the server is down (issue 2 review)."""

from __future__ import annotations

import socket

import pytest

from inventory.dbfixtures import pg_admin


async def test_unreachable_postgresql_fails_the_test_with_a_clear_message() -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(pytest.fail.Exception) as info:
            await pg_admin(f"postgresql://postgres@127.0.0.1:{port}/test")
    assert "unreachable" in str(info.value) and "make services" in str(info.value)
