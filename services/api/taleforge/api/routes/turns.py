"""A turn's state: pending, narrating, completed (with narration and usage) or failed."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response

from taleforge.api.adapters import read_model
from taleforge.api.deps import Bus, CurrentUser, DbForCall, DbSession, SettingsDep
from taleforge.api.models import TurnPublic
from taleforge.api.streaming.cursor import Cursor
from taleforge.api.streaming.feed import TurnFeed, find_turn_request
from taleforge.api.streaming.sse import SSE_MEDIA_TYPE
from taleforge.api.streaming.turns import (
    LastEventIdHeader,
    parse_cursor,
    release_on_outcome,
    request_of_cursor,
    stream_response,
)
from taleforge.api.turn_views import turn_public

router = APIRouter(prefix="/api/turns", tags=["turns"])


@router.get("/{turn_id}", response_model=TurnPublic, responses={404: {}})
async def read_turn(turn_id: UUID, user: CurrentUser, db: DbSession) -> TurnPublic:
    row = await read_model.get_turn(db, turn_id, user.id)
    if row is None:
        # Also for a turn accepted a moment ago that persistence has not recorded yet: every
        # replica answers alike, and the client polls again.
        raise HTTPException(404, f"no turn {turn_id}")
    images = await read_model.list_turn_images(db, turn_id, user.id)
    return turn_public(row, images)


@router.get(
    "/{turn_id}/events",
    response_class=Response,
    responses={
        200: {
            "description": "The turn's Server-Sent Events; the stream ends after "
            "`turn.completed` or `turn.failed`.",
            "content": {SSE_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        204: {"description": "The given Last-Event-ID was the turn's last event."},
        404: {"description": "No such turn (of yours)"},
    },
)
async def turn_events(
    turn_id: UUID,
    request: Request,
    user: CurrentUser,
    bus: Bus,
    settings: SettingsDep,
    db: DbForCall,
    last_event_id: LastEventIdHeader = None,
    last_event_id_query: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            max_length=100,
            description="As the Last-Event-ID header, for clients that cannot set headers.",
        ),
    ] = None,
) -> Response:
    """Follow a turn as Server-Sent Events (the same events as `POST /api/story/progress`
    streams), from its start, or after `Last-Event-ID`, on any replica."""
    js = bus.js
    text = last_event_id or last_event_id_query
    if text:
        cursor = parse_cursor(text)
        session_id = (await request_of_cursor(js, cursor, user, turn_id=turn_id)).session_id
    else:
        row = await read_model.get_turn(db, turn_id, user.id)
        start = None if row is None else await find_turn_request(js, row.session_id, turn_id)
        if row is None or start is None:
            raise HTTPException(404, f"no turn {turn_id}")
        session_id, cursor = row.session_id, Cursor.beginning(start)
    feed = TurnFeed(
        js,
        session_id=session_id,
        turn_id=turn_id,
        cursor=cursor,
        on_outcome=release_on_outcome(request.app.state.turn_locks, session_id, turn_id),
    )
    return stream_response(feed, heartbeat_s=settings.sse_heartbeat_s)
