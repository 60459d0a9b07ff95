"""Row-level security through the API's own database path (`deps.get_db`: the engine the app
builds, each transaction run as `authenticated` with the player's claims), with hand-written
SQL that has no `user_id` filter: player B cannot read, change or delete player A's rows, and
a connection with no claims sees nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taleforge.api.app import create_engine
from taleforge.api.auth import User
from taleforge.api.deps import get_db
from taleforge.api.settings import Settings

from .conftest import Rows

pytestmark = pytest.mark.integration

PLAYER_TABLES = ("story_sessions", "turns", "images", "saves", "usage_ledger")
BOOKKEEPING = ("processed_events", "dead_letters")


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=migrated_database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def alice(db: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """Player A with a row in every player table (inserted as the owner, like persistence)."""
    rows = Rows(db)
    user = uuid.uuid4()
    session = await rows.session(user)
    turn = await rows.turn(session, user)
    image = await rows.image(turn, user)
    save = uuid.uuid4()
    await db.execute(
        "INSERT INTO saves (id, user_id, session_id, turn_id, title, snapshot)"
        " VALUES ($1, $2, $3, $4, 'Before the storm', '{}')",
        save,
        user,
        session,
        turn,
    )
    await db.execute(
        "INSERT INTO usage_ledger (user_id, day, completed_turns) VALUES ($1, current_date, 1)",
        user,
    )
    await db.execute(
        "INSERT INTO processed_events (event_id, event_type, session_id) VALUES ($1, 'x', $2)",
        uuid.uuid4(),
        session,
    )
    await db.execute("INSERT INTO dead_letters (stream_seq, reason) VALUES (1, 'poison')")
    return {"user": user, "session": session, "turn": turn, "image": image, "save": save}


@asynccontextmanager
async def as_player(engine: AsyncEngine, user_id: uuid.UUID) -> AsyncIterator[AsyncConnection]:
    """Exactly the connection a route gets from `DbSession`."""
    settings = Settings()
    connections = get_db(engine, settings, User(id=user_id))
    conn = await anext(connections)
    try:
        yield conn
    finally:
        await connections.aclose()


async def counts(conn: AsyncConnection, tables: tuple[str, ...] = PLAYER_TABLES) -> dict[str, int]:
    return {t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in tables}


async def attempt(engine: AsyncEngine, user_id: uuid.UUID, sql: str, **params: Any) -> int | str:
    """Rows a statement changed as `user_id` (committed), or 'denied' when not allowed."""
    try:
        async with as_player(engine, user_id) as conn:
            changed = (await conn.execute(text(sql), params)).rowcount
            await conn.commit()
            return changed
    except ProgrammingError as exc:
        assert "permission denied" in str(exc)
        return "denied"


async def test_the_api_reads_as_authenticated_with_the_players_claims(
    engine: AsyncEngine,
) -> None:
    user = uuid.uuid4()
    async with as_player(engine, user) as conn:
        row = (
            await conn.execute(
                text("SELECT current_user, auth.uid(), current_setting('request.jwt.claims')")
            )
        ).one()
    assert row[0] == "authenticated"
    assert row[1] == user
    assert json.loads(row[2])["sub"] == str(user)
    # Transaction-local: the pooled connection is back to the login's role afterwards.
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT current_user")) != "authenticated"
        assert await conn.scalar(text("SELECT auth.uid()")) is None


async def test_a_player_sees_their_own_rows(engine: AsyncEngine, alice: dict[str, Any]) -> None:
    async with as_player(engine, alice["user"]) as conn:
        assert await counts(conn) == dict.fromkeys(PLAYER_TABLES, 1)


async def test_another_player_reads_nothing_of_theirs(
    engine: AsyncEngine, alice: dict[str, Any]
) -> None:
    async with as_player(engine, uuid.uuid4()) as conn:
        assert await counts(conn) == dict.fromkeys(PLAYER_TABLES, 0)
        # Even by primary key, the way an API bug that dropped the user filter would ask.
        found = await conn.scalar(
            text("SELECT count(*) FROM story_sessions WHERE id = :id"), {"id": alice["session"]}
        )
        assert found == 0
        for table in BOOKKEEPING:  # the service's own tables are closed to players
            with pytest.raises(ProgrammingError, match="permission denied"):
                async with conn.begin_nested():
                    await conn.execute(text(f"SELECT * FROM {table}"))


async def test_another_player_cannot_change_or_delete_their_rows(
    engine: AsyncEngine, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    bob = uuid.uuid4()
    # Sessions and saves are the rows a player may rename or delete: RLS finds none of A's.
    for table, row_id in (("story_sessions", alice["session"]), ("saves", alice["save"])):
        assert await attempt(engine, bob, f"UPDATE {table} SET title = 'mine'") == 0
        assert await attempt(engine, bob, f"DELETE FROM {table} WHERE id = :id", id=row_id) == 0
        assert await attempt(engine, bob, f"DELETE FROM {table}") == 0
    # Everything else is read-only to players, whoever owns it.
    for table in ("turns", "images", "usage_ledger"):
        assert await attempt(engine, bob, f"UPDATE {table} SET user_id = :me", me=bob) in (
            0,
            "denied",
        )
        assert await attempt(engine, bob, f"DELETE FROM {table}") in (0, "denied")
    # A player may not hand a row to someone else either (WITH CHECK), even their own.
    moved = await attempt(engine, alice["user"], "UPDATE saves SET user_id = :b", b=bob)
    assert moved == "denied"  # the column is not granted; on Supabase the policy check fails

    for table in PLAYER_TABLES:
        assert (
            await db.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", alice["user"])
            == 1
        )
    assert await db.fetchval("SELECT title FROM saves") == "Before the storm"
    # The owner herself can rename her session: the policy, not a missing grant, stopped B.
    assert await attempt(engine, alice["user"], "UPDATE story_sessions SET title = 'Mine'") == 1


async def test_no_claims_sees_nothing(engine: AsyncEngine, alice: dict[str, Any]) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL ROLE authenticated"))
        assert await counts(conn) == dict.fromkeys(PLAYER_TABLES, 0)
        assert (await conn.execute(text("UPDATE story_sessions SET title = 'x'"))).rowcount == 0
        await conn.rollback()
        # Claims without a subject are no better.
        await conn.execute(text("SET LOCAL ROLE authenticated"))
        await conn.execute(text("SELECT set_config('request.jwt.claims', '{}', true)"))
        assert await counts(conn) == dict.fromkeys(PLAYER_TABLES, 0)


async def test_the_admin_role_sees_every_row(engine: AsyncEngine, alice: dict[str, Any]) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL ROLE taleforge_admin"))
        assert await counts(conn, PLAYER_TABLES + BOOKKEEPING) == dict.fromkeys(
            PLAYER_TABLES + BOOKKEEPING, 1
        )
