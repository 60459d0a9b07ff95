"""Projections of what a player does to a session as a whole: rename, delete, save, load.

Deleting is hard: the session row goes and, by cascade, its turns, images and saves, so
nothing of it can leak through any query; a tombstone (`deleted_sessions`) remembers the
id, so events about the session that arrive later (a turn in flight, its image) are
recognised and ignored instead of dead-lettered (see `projection.project`).

Loading a save (`session.restored`) moves the session's head back to the save's turn and
recomputes `turns.in_story`: the head's ancestors (via `parent_turn_id`) are the story
line; every other turn of the session is off it. The next turn's parent is the save's turn,
so the turns form a tree and loading a save made on another branch brings that branch back.
"""

from __future__ import annotations

import logging
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.contracts import (
    SaveCreated,
    SaveDeleted,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
)
from taleforge.persistence.models import Base, DeletedSession, Save, StorySession, Turn
from taleforge.persistence.rejections import EventRejected

log = logging.getLogger(__name__)

sessions = Base.metadata.tables[StorySession.__tablename__]
turns = Base.metadata.tables[Turn.__tablename__]
saves = Base.metadata.tables[Save.__tablename__]
deleted_sessions = Base.metadata.tables[DeletedSession.__tablename__]


async def is_deleted(conn: AsyncConnection, session_id: UUID) -> bool:
    found = await conn.scalar(
        select(deleted_sessions.c.session_id).where(deleted_sessions.c.session_id == session_id)
    )
    return found is not None


async def _reject_missing_session(conn: AsyncConnection, session_id: UUID, user_id: UUID) -> None:
    owner = await conn.scalar(select(sessions.c.user_id).where(sessions.c.id == session_id))
    if owner is None:
        raise EventRejected(f"unknown session {session_id}")
    if owner != user_id:
        raise EventRejected(f"session {session_id} belongs to another user")


async def rename_session(conn: AsyncConnection, event: SessionRenamed) -> None:
    renamed = await conn.scalar(
        sessions.update()
        .where(sessions.c.id == event.session_id, sessions.c.user_id == event.user_id)
        .values(title=event.title, updated_at=event.occurred_at)
        .returning(sessions.c.id)
    )
    if renamed is None:
        await _reject_missing_session(conn, event.session_id, event.user_id)


async def delete_session(conn: AsyncConnection, event: SessionDeleted) -> None:
    deleted = await conn.scalar(
        sessions.delete()
        .where(sessions.c.id == event.session_id, sessions.c.user_id == event.user_id)
        .returning(sessions.c.id)
    )
    if deleted is None:
        # Already deleted (a second request): `project` finds the tombstone and ignores it.
        await _reject_missing_session(conn, event.session_id, event.user_id)
    await conn.execute(
        text(
            "INSERT INTO deleted_sessions (session_id, user_id, deleted_at) "
            "VALUES (:session_id, :user_id, :at) ON CONFLICT (session_id) DO NOTHING"
        ),
        {"session_id": event.session_id, "user_id": event.user_id, "at": event.occurred_at},
    )
    log.info("session %s deleted with its turns, images and saves", event.session_id)


# The save only under its player's own session, and only at a turn of that session.
_CREATE_SAVE = text(
    """
    INSERT INTO saves (id, user_id, session_id, turn_id, title, created_at)
    SELECT :save_id, s.user_id, s.id, CAST(:turn_id AS uuid), :title, :at
      FROM story_sessions AS s
     WHERE s.id = :session_id AND s.user_id = :user_id
       AND (CAST(:turn_id AS uuid) IS NULL
            OR EXISTS (SELECT FROM turns WHERE id = :turn_id AND session_id = s.id))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)


async def create_save(conn: AsyncConnection, event: SaveCreated) -> None:
    created = await conn.scalar(
        _CREATE_SAVE,
        {
            "save_id": event.save_id,
            "session_id": event.session_id,
            "user_id": event.user_id,
            "turn_id": event.turn_id,
            "title": event.title,
            "at": event.occurred_at,
        },
    )
    if created is not None:
        return
    if await conn.scalar(select(saves.c.id).where(saves.c.id == event.save_id)) is not None:
        log.info("save %s already recorded; event %s ignored", event.save_id, event.event_id)
        return
    await _reject_missing_session(conn, event.session_id, event.user_id)
    raise EventRejected(f"unknown turn {event.turn_id} in session {event.session_id}")


async def delete_save(conn: AsyncConnection, event: SaveDeleted) -> None:
    where = (saves.c.id == event.save_id, saves.c.user_id == event.user_id)
    deleted = await conn.scalar(saves.delete().where(*where).returning(saves.c.id))
    if deleted is not None:
        return
    if await conn.scalar(select(saves.c.id).where(saves.c.id == event.save_id)) is not None:
        raise EventRejected(f"save {event.save_id} belongs to another user")
    log.info("save %s is already gone; event %s ignored", event.save_id, event.event_id)


# The head's ancestors are the story line; flip only the turns whose membership changes.
_RESTORE_LINE = text(
    """
    WITH RECURSIVE line AS (
        SELECT id, parent_turn_id FROM turns
         WHERE id = CAST(:turn_id AS uuid) AND session_id = :session_id
        UNION ALL
        SELECT t.id, t.parent_turn_id FROM turns AS t JOIN line AS l ON t.id = l.parent_turn_id
    )
    UPDATE turns AS t SET in_story = (t.id IN (SELECT id FROM line))
     WHERE t.session_id = :session_id AND t.in_story <> (t.id IN (SELECT id FROM line))
    """
)


async def restore_session(conn: AsyncConnection, event: SessionRestored) -> None:
    if event.turn_id is not None:
        found = await conn.scalar(
            select(turns.c.id).where(
                turns.c.id == event.turn_id, turns.c.session_id == event.session_id
            )
        )
        if found is None:
            await _reject_missing_session(conn, event.session_id, event.user_id)
            raise EventRejected(f"unknown turn {event.turn_id} in session {event.session_id}")
    moved = await conn.scalar(
        sessions.update()
        .where(sessions.c.id == event.session_id, sessions.c.user_id == event.user_id)
        .values(head_turn_id=event.turn_id, updated_at=event.occurred_at)
        .returning(sessions.c.id)
    )
    if moved is None:
        await _reject_missing_session(conn, event.session_id, event.user_id)
    await conn.execute(_RESTORE_LINE, {"turn_id": event.turn_id, "session_id": event.session_id})
    log.info("session %s restored to turn %s", event.session_id, event.turn_id)
