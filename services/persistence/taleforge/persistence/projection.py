"""How each stream event changes the read model.

Every function runs inside the caller's transaction (see `adapters.repository`), which also
records the event id, so an event is applied exactly once however often it is delivered.
Turn and image statuses only move forward: pending → narrating → completed | failed, and
the first terminal event wins. An event about rows that do not exist is rejected
(`EventRejected`) and dead-lettered: in stream order its parent always comes first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    NarrationStarted,
    SessionStarted,
    StoryEvent,
    TurnFailed,
    TurnRequested,
)
from taleforge.persistence.models import Base, Image, StorySession, Turn

log = logging.getLogger(__name__)

sessions = Base.metadata.tables[StorySession.__tablename__]
turns = Base.metadata.tables[Turn.__tablename__]
images = Base.metadata.tables[Image.__tablename__]

OPEN_TURN = ("pending", "narrating")


class EventRejected(Exception):
    """The event cannot be applied, ever: it goes to the dead letters. `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _exists(conn: AsyncConnection, table: Any, row_id: UUID, what: str) -> None:
    found = await conn.scalar(select(table.c.id).where(table.c.id == row_id))
    if found is None:
        raise EventRejected(f"unknown {what} {row_id}")


async def start_session(conn: AsyncConnection, event: SessionStarted) -> None:
    await conn.execute(
        insert(sessions)
        .values(
            id=event.session_id,
            user_id=event.user_id,
            scenario_id=event.scenario_id,
            title=event.title,
            opening=event.opening,
            turn_count=0,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
        )
        .on_conflict_do_nothing(index_elements=[sessions.c.id])
    )


async def request_turn(conn: AsyncConnection, event: TurnRequested) -> None:
    if await conn.scalar(select(turns.c.id).where(turns.c.id == event.turn_id)) is not None:
        log.info("turn %s already recorded; event %s ignored", event.turn_id, event.event_id)
        return
    # Taking the next number and bumping the count in one statement keeps seq gap-free.
    seq = await conn.scalar(
        update(sessions)
        .where(sessions.c.id == event.session_id, sessions.c.user_id == event.user_id)
        .values(turn_count=sessions.c.turn_count + 1, updated_at=event.occurred_at)
        .returning(sessions.c.turn_count)
    )
    if seq is None:
        await _exists(conn, sessions, event.session_id, "session")
        raise EventRejected(f"session {event.session_id} belongs to another user")
    await conn.execute(
        insert(turns).values(
            id=event.turn_id,
            session_id=event.session_id,
            user_id=event.user_id,
            seq=seq,
            input_type=event.input_type.value,
            input_text=event.text,
            status="pending",
            requested_at=event.occurred_at,
        )
    )


async def _advance(
    conn: AsyncConnection,
    table: Any,
    row_id: UUID,
    event: StoryEvent,
    open_statuses: tuple[str, ...],
    values: dict[str, Any],
) -> None:
    """Apply `values` to a row of the event's session still in `open_statuses`.

    Statuses only move forward: the first final event wins, a later one is logged and
    ignored. A row that does not exist at all is a broken event (dead letter).
    """
    where = (table.c.id == row_id, table.c.session_id == event.session_id)
    changed = await conn.scalar(
        update(table)
        .where(*where, table.c.status.in_(open_statuses))
        .values(**values)
        .returning(table.c.id)
    )
    if changed is None:
        status = await conn.scalar(select(table.c.status).where(*where))
        noun = table.name.rstrip("s")
        if status is None:
            raise EventRejected(f"unknown {noun} {row_id} in session {event.session_id}")
        log.info("%s %s is already %s; %s ignored", noun, row_id, status, event.type)


async def _update_open_turn(
    conn: AsyncConnection, event: StoryEvent, values: dict[str, Any]
) -> None:
    assert event.turn_id is not None
    await _advance(conn, turns, event.turn_id, event, OPEN_TURN, values)


async def start_narration(conn: AsyncConnection, event: NarrationStarted) -> None:
    await _update_open_turn(
        conn, event, {"status": "narrating", "started_at": event.occurred_at, "model": event.model}
    )


async def complete_narration(conn: AsyncConnection, event: NarrationCompleted) -> None:
    usage = event.usage
    await _update_open_turn(
        conn,
        event,
        {
            "status": "completed",
            "narration": event.text,
            "model": event.model,
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "total_tokens": usage.total_tokens,
            "response_id": event.response_id,
            "time_to_first_token_ms": event.time_to_first_token_ms,
            "duration_ms": event.duration_ms,
            "completed_at": event.occurred_at,
        },
    )


async def fail_turn(conn: AsyncConnection, event: TurnFailed) -> None:
    await _update_open_turn(
        conn,
        event,
        {
            "status": "failed",
            "error_code": event.code,
            "error": event.reason,
            "completed_at": event.occurred_at,
        },
    )


async def request_image(conn: AsyncConnection, event: ImageRequested) -> None:
    owner = await conn.scalar(
        select(turns.c.user_id).where(
            turns.c.id == event.turn_id, turns.c.session_id == event.session_id
        )
    )
    if owner is None:
        raise EventRejected(f"unknown turn {event.turn_id} in session {event.session_id}")
    if owner != event.user_id:
        raise EventRejected(f"turn {event.turn_id} belongs to another user")
    await conn.execute(
        insert(images)
        .values(
            id=event.image_id,
            session_id=event.session_id,
            turn_id=event.turn_id,
            user_id=event.user_id,
            kind=event.kind.value,
            status="pending",
            prompt=event.prompt,
            seed=event.seed,
            width=event.width,
            height=event.height,
            requested_at=event.occurred_at,
        )
        .on_conflict_do_nothing(index_elements=[images.c.id])
    )


async def _update_pending_image(
    conn: AsyncConnection, event: ImageCompleted | ImageFailed, values: dict[str, Any]
) -> None:
    await _advance(conn, images, event.image_id, event, ("pending",), values)


async def complete_image(conn: AsyncConnection, event: ImageCompleted) -> None:
    values: dict[str, Any] = {
        "status": "completed",
        "bucket": event.bucket,
        "object_name": event.object_name,
        "content_type": event.content_type,
        "size_bytes": event.size_bytes,
        "sha256": event.sha256,
        "width": event.width,
        "height": event.height,
        "completed_at": event.occurred_at,
    }
    if event.seed is not None:
        values["seed"] = event.seed
    await _update_pending_image(conn, event, values)


async def fail_image(conn: AsyncConnection, event: ImageFailed) -> None:
    await _update_pending_image(
        conn,
        event,
        {
            "status": "failed",
            "error_code": event.code,
            "error": event.reason,
            "completed_at": event.occurred_at,
        },
    )


PROJECTIONS: dict[str, Callable[[AsyncConnection, Any], Awaitable[None]]] = {
    SessionStarted.TYPE: start_session,
    TurnRequested.TYPE: request_turn,
    NarrationStarted.TYPE: start_narration,
    NarrationCompleted.TYPE: complete_narration,
    TurnFailed.TYPE: fail_turn,
    ImageRequested.TYPE: request_image,
    ImageCompleted.TYPE: complete_image,
    ImageFailed.TYPE: fail_image,
}


async def project(conn: AsyncConnection, event: StoryEvent) -> None:
    """Apply one event's effects on `conn` (inside the caller's transaction)."""
    apply = PROJECTIONS.get(event.type)
    if apply is None:  # a stream event type this code does not project (yet)
        log.warning("no projection for %s; event %s only recorded", event.type, event.event_id)
        return
    await apply(conn, event)
