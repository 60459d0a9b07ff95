"""The test fixtures give real servers: JetStream answers and Postgres runs SQL."""

from __future__ import annotations

import asyncpg
import nats
import pytest

from ..support import asyncpg_dsn

pytestmark = pytest.mark.integration


async def test_nats_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().account_info()
        assert info.streams == 0
    finally:
        await nc.close()


async def test_database_is_fresh_postgres(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        version = await conn.fetchval("SHOW server_version_num")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert int(version) >= 150000
    assert tables == 0
