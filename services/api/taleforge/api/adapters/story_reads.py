"""Read-model queries for sessions as a whole: my sessions, a story line, my saves.

Like `read_model`, every query filters by the caller's user id (row-level security checks it
again), so another player's ids look exactly like unknown ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.api.adapters.read_model import images, saves, story_sessions, turns

T = TypeVar("T")
OPEN_TURN = ("pending", "narrating")


async def poll(
    check: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float
) -> T | None:
    """`check()` until it returns something truthy or `timeout_s` passes (then None).

    On the request's one connection at READ COMMITTED, so each poll sees what persistence
    has committed since the last.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval_s)


async def list_sessions(
    conn: AsyncConnection, user_id: UUID, *, limit: int, offset: int
) -> list[Row[Any]]:
    query = (
        select(story_sessions)
        .where(story_sessions.c.user_id == user_id)
        .order_by(story_sessions.c.updated_at.desc(), story_sessions.c.id)
        .limit(limit)
        .offset(offset)
    )
    return list((await conn.execute(query)).all())


async def story_line(
    conn: AsyncConnection, session_id: UUID, user_id: UUID, *, limit: int, before: int | None
) -> list[Row[Any]]:
    """Up to `limit` turns of the story line before seq `before`, newest first."""
    query = select(turns).where(
        turns.c.session_id == session_id, turns.c.user_id == user_id, turns.c.in_story
    )
    if before is not None:
        query = query.where(turns.c.seq < before)
    query = query.order_by(turns.c.seq.desc()).limit(limit)
    return list((await conn.execute(query)).all())


async def images_of(conn: AsyncConnection, turn_ids: list[UUID], user_id: UUID) -> list[Row[Any]]:
    if not turn_ids:
        return []
    query = (
        select(images)
        .where(images.c.turn_id.in_(turn_ids), images.c.user_id == user_id)
        .order_by(images.c.requested_at, images.c.id)
    )
    return list((await conn.execute(query)).all())


async def turn_in_progress(conn: AsyncConnection, session_id: UUID, user_id: UUID) -> bool:
    query = select(turns.c.id).where(
        turns.c.session_id == session_id,
        turns.c.user_id == user_id,
        turns.c.status.in_(OPEN_TURN),
    )
    return (await conn.execute(query.limit(1))).first() is not None


async def newest_completed_turn(
    conn: AsyncConnection, session_id: UUID, user_id: UUID
) -> Row[Any] | None:
    """The last beat of the story line as the player reads it (failed turns are not beats)."""
    query = (
        select(turns.c.id, turns.c.seq)
        .where(
            turns.c.session_id == session_id,
            turns.c.user_id == user_id,
            turns.c.in_story,
            turns.c.status == "completed",
        )
        .order_by(turns.c.seq.desc())
        .limit(1)
    )
    return (await conn.execute(query)).first()  # type: ignore[return-value]


def _saves_query(user_id: UUID) -> Any:
    return (
        select(saves, turns.c.seq.label("turn_seq"))
        .outerjoin(turns, turns.c.id == saves.c.turn_id)
        .where(saves.c.user_id == user_id)
    )


async def get_save(conn: AsyncConnection, save_id: UUID, user_id: UUID) -> Row[Any] | None:
    row: Row[Any] | None = (
        await conn.execute(_saves_query(user_id).where(saves.c.id == save_id))
    ).first()
    return row


async def list_saves(
    conn: AsyncConnection,
    user_id: UUID,
    *,
    session_id: UUID | None,
    limit: int,
    offset: int,
) -> list[Row[Any]]:
    query = _saves_query(user_id)
    if session_id is not None:
        query = query.where(saves.c.session_id == session_id)
    query = query.order_by(saves.c.created_at.desc(), saves.c.id).limit(limit).offset(offset)
    return list((await conn.execute(query)).all())
