"""Migrations against a real Postgres: up from empty, down to base, and up again."""

from __future__ import annotations

import asyncpg
import pytest

from taleforge.persistence.migrations import downgrade, upgrade_to_head, upgrade_to_head_async

pytestmark = pytest.mark.integration

TABLES = {"story_sessions", "turns", "images", "processed_events", "dead_letters"}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


async def test_upgrade_creates_every_table(migrated_database_url: str) -> None:
    assert TABLES | {"alembic_version"} <= await _tables(migrated_database_url)


async def test_downgrade_to_base_then_upgrade_again(migrated_database_url: str) -> None:
    downgrade(migrated_database_url, "base")
    assert await _tables(migrated_database_url) == {"alembic_version"}
    upgrade_to_head(migrated_database_url)
    assert TABLES <= await _tables(migrated_database_url)


async def test_async_upgrade_inside_a_running_loop(database_url: str) -> None:
    await upgrade_to_head_async(database_url)
    await upgrade_to_head_async(database_url)  # idempotent at head
    assert TABLES <= await _tables(database_url)


async def test_models_match_the_migrations(migrated_database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    from taleforge.persistence.models import Base

    engine = create_async_engine(migrated_database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []
