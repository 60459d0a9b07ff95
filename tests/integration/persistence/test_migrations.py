"""Migrations against a real Postgres: up from empty, down to base, and up again."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from taleforge.contracts import NarrationCompleted, TokenUsage
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.migrations import downgrade, upgrade_to_head, upgrade_to_head_async

from ...support import asyncpg_dsn

pytestmark = pytest.mark.integration

TABLES = {
    "scenarios",
    "story_sessions",
    "turns",
    "images",
    "saves",
    "usage_ledger",
    "processed_events",
    "dead_letters",
    "deleted_sessions",
    "settings_changes",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
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


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_down_and_up_again_on_a_database_with_data(
    migrated_database_url: str, story: Any
) -> None:
    url = migrated_database_url
    repo = Repository(create_engine(url))
    try:
        await repo.apply_event(story.started())
        first, second = story.turn("one"), story.turn("two")
        for event in (first, second):
            await repo.apply_event(event)
        await repo.apply_event(
            NarrationCompleted(
                **story.ids(first.turn_id),
                text="The lamp is lit.",
                model="m",
                usage=TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15),
                cost_usd=0.25,
            )
        )
    finally:
        await repo.close()

    # Back to the first schema: the rows it has columns for stay.
    downgrade(url, "0001")
    assert "usage_ledger" not in await _tables(url)
    assert len(await _fetch(url, "SELECT * FROM turns")) == 2

    # Forward again: the new columns and the ledger are backfilled from those rows.
    upgrade_to_head(url)
    turns = await _fetch(url, "SELECT id, parent_turn_id FROM turns ORDER BY seq")
    assert [(t["id"], t["parent_turn_id"]) for t in turns] == [
        (first.turn_id, None),
        (second.turn_id, first.turn_id),
    ]
    [session] = await _fetch(url, "SELECT head_turn_id, story_state FROM story_sessions")
    assert session["head_turn_id"] == second.turn_id
    [ledger] = await _fetch(url, "SELECT completed_turns, total_tokens FROM usage_ledger")
    assert (ledger["completed_turns"], ledger["total_tokens"]) == (1, 15)
    # The policies are back too.
    policies = await _fetch(url, "SELECT policyname FROM pg_policies WHERE tablename = 'turns'")
    assert {p["policyname"] for p in policies} == {
        "turns_select_own",
        "turns_admin_all",
        "turns_admin_read",
    }

    # All the way down with data in every table, and up again.
    downgrade(url, "base")
    assert await _tables(url) == {"alembic_version"}
    assert await _fetch(url, "SELECT to_regprocedure('auth.uid()') AS f") == [(None,)]
    upgrade_to_head(url)
    assert TABLES <= await _tables(url)
