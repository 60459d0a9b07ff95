"""How each stream event changes the read model.

Every function runs inside the caller's transaction (see `adapters.repository`), which also
records the event id, so an event is applied exactly once however often it is delivered.
A turn's parent is the session's head turn when it was requested, and the new turn becomes
the head. Each completed narration adds its tokens and cost to the player's usage ledger for
that (UTC) day, once. Turn and image statuses only move forward: pending → narrating →
completed | failed, and the first terminal event wins. An event about rows that do not
exist is rejected (`EventRejected`) and dead-lettered: in stream order its parent always
comes first, unless the session was deleted since: such events are ignored (a completed
narration still adds its tokens to the player's usage: they were spent).
Sessions as a whole (rename, delete, save, load) are in `story_lines`, admin events in
`admin_projection`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.contracts import (
    NO_SESSION,
    DeadLetterRetried,
    DeliveryExhausted,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    MemoryFolded,
    NarrationCompleted,
    NarrationStarted,
    SaveCreated,
    SaveDeleted,
    ScenarioDeleted,
    ScenarioUpserted,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
    SessionStarted,
    SettingsChanged,
    StoryEvent,
    TokenUsage,
    TurnFailed,
    TurnRequested,
)
from taleforge.persistence import admin_projection, failures, story_lines
from taleforge.persistence.models import Base, Image, StorySession, Turn
from taleforge.persistence.rejections import EventRejected

log = logging.getLogger(__name__)

sessions = Base.metadata.tables[StorySession.__tablename__]
turns = Base.metadata.tables[Turn.__tablename__]
images = Base.metadata.tables[Image.__tablename__]

OPEN_TURN = ("pending", "narrating")


__all__ = ["PROJECTIONS", "EventRejected", "project"]


async def _exists(conn: AsyncConnection, table: Any, row_id: UUID, what: str) -> None:
    found = await conn.scalar(select(table.c.id).where(table.c.id == row_id))
    if found is None:
        raise EventRejected(f"unknown {what} {row_id}")


def _initial_state(event: SessionStarted) -> dict[str, Any]:
    if event.scenario is None:
        return {}
    return {"scenario": event.scenario.model_dump(mode="json")}


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
            story_state=_initial_state(event),
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
        )
        .on_conflict_do_nothing(index_elements=[sessions.c.id])
    )


# One round trip for the commonest write: bump the session's count and head, and insert the
# turn as a child of the previous head. The self-join returns the head *before* the update;
# the foreign keys are checked at the end of the statement, when the new turn exists.
_REQUEST_TURN = text(
    """
    WITH bumped AS (
        UPDATE story_sessions AS s
           SET turn_count = s.turn_count + 1, updated_at = :at, head_turn_id = :turn_id
          FROM story_sessions AS before
         WHERE s.id = :session_id AND s.user_id = :user_id AND before.id = s.id
           AND NOT EXISTS (SELECT FROM turns WHERE id = :turn_id)
     RETURNING s.turn_count AS seq, before.head_turn_id AS parent_turn_id
    )
    INSERT INTO turns (id, session_id, user_id, seq, parent_turn_id, input_type, input_text,
                       status, requested_at)
    SELECT :turn_id, :session_id, :user_id, seq, parent_turn_id, :input_type, :input_text,
           'pending', :at
      FROM bumped
    RETURNING seq
    """
)


async def request_turn(conn: AsyncConnection, event: TurnRequested) -> None:
    seq = await conn.scalar(
        _REQUEST_TURN,
        {
            "turn_id": event.turn_id,
            "session_id": event.session_id,
            "user_id": event.user_id,
            "input_type": event.input_type.value,
            "input_text": event.text,
            "at": event.occurred_at,
        },
    )
    if seq is not None:
        return
    if await conn.scalar(select(turns.c.id).where(turns.c.id == event.turn_id)) is not None:
        log.info("turn %s already recorded; event %s ignored", event.turn_id, event.event_id)
        return
    await _exists(conn, sessions, event.session_id, "session")
    raise EventRejected(f"session {event.session_id} belongs to another user")


async def _advance(
    conn: AsyncConnection,
    table: Any,
    row_id: UUID,
    event: StoryEvent,
    open_statuses: tuple[str, ...],
    values: dict[str, Any],
) -> bool:
    """Apply `values` to a row of the event's session still in `open_statuses`.

    Statuses only move forward: the first final event wins, a later one is logged and
    ignored (False). A row that does not exist at all is a broken event (dead letter).
    """
    where = (table.c.id == row_id, table.c.session_id == event.session_id)
    changed = await conn.scalar(
        update(table)
        .where(*where, table.c.status.in_(open_statuses))
        .values(**values)
        .returning(table.c.id)
    )
    if changed is not None:
        return True
    status = await conn.scalar(select(table.c.status).where(*where))
    noun = table.name.rstrip("s")
    if status is None:
        raise EventRejected(f"unknown {noun} {row_id} in session {event.session_id}")
    log.info("%s %s is already %s; %s ignored", noun, row_id, status, event.type)
    return False


async def _update_open_turn(
    conn: AsyncConnection, event: StoryEvent, values: dict[str, Any]
) -> bool:
    assert event.turn_id is not None
    return await _advance(conn, turns, event.turn_id, event, OPEN_TURN, values)


async def start_narration(conn: AsyncConnection, event: NarrationStarted) -> None:
    await _update_open_turn(
        conn, event, {"status": "narrating", "started_at": event.occurred_at, "model": event.model}
    )


async def complete_narration(conn: AsyncConnection, event: NarrationCompleted) -> None:
    usage = event.usage
    cost = _cost_usd(event)
    completed = await _update_open_turn(
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
            "cost_usd": cost,
            "response_id": event.response_id,
            "time_to_first_token_ms": event.time_to_first_token_ms,
            "duration_ms": event.duration_ms,
            "completed_at": event.occurred_at,
        },
    )
    if completed:  # only the turn's first completion counts; a redelivery is ignored above
        await _add_usage(conn, event, event.usage, cost, turns=1)


async def record_memory_fold(conn: AsyncConnection, event: MemoryFolded) -> None:
    # The summary call is billed like a turn's (the daily budget counts it) but is no turn.
    # The fold's text itself lives in the event log, where show-prompt and replay read it.
    await _add_usage(conn, event, event.usage, _cost_usd(event), turns=0)


def _cost_usd(event: NarrationCompleted | MemoryFolded) -> Decimal | None:
    # None: an unpriced model, or an event from before the narrator priced turns.
    return None if event.cost_usd is None else Decimal(str(event.cost_usd))


_ADD_USAGE = text(
    """
    INSERT INTO usage_ledger AS l (user_id, day, completed_turns, input_tokens, cached_tokens,
                                   output_tokens, reasoning_tokens, total_tokens, cost_usd,
                                   updated_at)
    VALUES (:user_id, :day, :turns, :input_tokens, :cached_tokens, :output_tokens,
            :reasoning_tokens, :total_tokens, :cost_usd, :at)
    ON CONFLICT (user_id, day) DO UPDATE SET
        completed_turns = l.completed_turns + excluded.completed_turns,
        input_tokens = l.input_tokens + excluded.input_tokens,
        cached_tokens = l.cached_tokens + excluded.cached_tokens,
        output_tokens = l.output_tokens + excluded.output_tokens,
        reasoning_tokens = l.reasoning_tokens + excluded.reasoning_tokens,
        total_tokens = l.total_tokens + excluded.total_tokens,
        cost_usd = l.cost_usd + excluded.cost_usd,
        updated_at = greatest(l.updated_at, excluded.updated_at)
    """
)


async def _add_usage(
    conn: AsyncConnection,
    event: NarrationCompleted | MemoryFolded,
    usage: TokenUsage,
    cost: Decimal | None,
    *,
    turns: int,
) -> None:
    await conn.execute(
        _ADD_USAGE,
        {
            "user_id": event.user_id,
            "turns": turns,
            "day": event.occurred_at.astimezone(UTC).date(),
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "total_tokens": usage.total_tokens,
            "cost_usd": cost or Decimal(0),
            "at": event.occurred_at,
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
    await failures.record_failed_request(conn, event)


# One round trip: the image is inserted only under its player's own turn of that session.
_REQUEST_IMAGE = text(
    """
    INSERT INTO images (id, session_id, turn_id, user_id, kind, status, prompt, seed, width,
                        height, requested_at)
    SELECT :image_id, t.session_id, t.id, t.user_id, :kind, 'pending', :prompt, :seed, :width,
           :height, :at
      FROM turns AS t
     WHERE t.id = :turn_id AND t.session_id = :session_id AND t.user_id = :user_id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)


async def request_image(conn: AsyncConnection, event: ImageRequested) -> None:
    inserted = await conn.scalar(
        _REQUEST_IMAGE,
        {
            "image_id": event.image_id,
            "turn_id": event.turn_id,
            "session_id": event.session_id,
            "user_id": event.user_id,
            "kind": event.kind.value,
            "prompt": event.prompt,
            "seed": event.seed,
            "width": event.width,
            "height": event.height,
            "at": event.occurred_at,
        },
    )
    if inserted is not None:
        return
    owner = await conn.scalar(
        select(turns.c.user_id).where(
            turns.c.id == event.turn_id, turns.c.session_id == event.session_id
        )
    )
    if owner is None:
        raise EventRejected(f"unknown turn {event.turn_id} in session {event.session_id}")
    if owner != event.user_id:
        raise EventRejected(f"turn {event.turn_id} belongs to another user")
    log.info("image %s already recorded; event %s ignored", event.image_id, event.event_id)


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
    if event.template is not None:
        values["template"] = event.template
        values["template_version"] = event.template_version
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
    await failures.record_failed_request(conn, event)


PROJECTIONS: dict[str, Callable[[AsyncConnection, Any], Awaitable[None]]] = {
    SessionStarted.TYPE: start_session,
    TurnRequested.TYPE: request_turn,
    NarrationStarted.TYPE: start_narration,
    NarrationCompleted.TYPE: complete_narration,
    TurnFailed.TYPE: fail_turn,
    MemoryFolded.TYPE: record_memory_fold,
    ImageRequested.TYPE: request_image,
    ImageCompleted.TYPE: complete_image,
    ImageFailed.TYPE: fail_image,
    DeliveryExhausted.TYPE: failures.note_exhausted,
    SessionRenamed.TYPE: story_lines.rename_session,
    SessionDeleted.TYPE: story_lines.delete_session,
    SaveCreated.TYPE: story_lines.create_save,
    SaveDeleted.TYPE: story_lines.delete_save,
    SessionRestored.TYPE: story_lines.restore_session,
    ScenarioUpserted.TYPE: admin_projection.upsert_scenario,
    ScenarioDeleted.TYPE: admin_projection.delete_scenario,
    SettingsChanged.TYPE: admin_projection.record_settings_change,
    DeadLetterRetried.TYPE: admin_projection.record_dead_letter_retry,
}


async def project(conn: AsyncConnection, event: StoryEvent) -> None:
    """Apply one event's effects on `conn` (inside the caller's transaction)."""
    apply = PROJECTIONS.get(event.type)
    if apply is None:  # a stream event type this code does not project (yet)
        log.warning("no projection for %s; event %s only recorded", event.type, event.event_id)
        return
    try:
        await apply(conn, event)
    except EventRejected:
        # Checked only when something is missing, so the common path costs no extra query.
        if event.session_id == NO_SESSION or not await story_lines.is_deleted(
            conn, event.session_id
        ):
            raise
        log.info("session %s was deleted; %s ignored", event.session_id, event.type)
        if isinstance(event, NarrationCompleted):
            await _add_usage(conn, event, event.usage, _cost_usd(event), turns=1)
