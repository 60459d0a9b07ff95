"""Moving the story on: the player's next line, action or "continue"."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from fastapi import APIRouter, Header, HTTPException, Request, Response

from taleforge.api.adapters import read_model
from taleforge.api.deps import Bus, CurrentUser, DbForCall, SettingsDep
from taleforge.api.limits.budget import check_budget
from taleforge.api.limits.turn_lock import Busy, LockUnavailable, TurnLocks
from taleforge.api.models import StoryProgressRequest, TurnAccepted
from taleforge.api.problems import ProblemError
from taleforge.api.streaming.cursor import Cursor
from taleforge.api.streaming.feed import TurnFeed
from taleforge.api.streaming.models import StoryProgressResponse
from taleforge.api.streaming.sse import SSE_MEDIA_TYPE, wants_event_stream
from taleforge.api.streaming.turns import (
    LastEventIdHeader,
    ResultResponse,
    accepted,
    events_url,
    parse_cursor,
    release_on_outcome,
    request_of_cursor,
    stream_response,
    wait_preference,
)
from taleforge.contracts import TurnRequested

router = APIRouter(prefix="/api/story", tags=["story"])


@router.post(
    "/progress",
    response_model=StoryProgressResponse,
    responses={
        200: {
            "description": "The finished turn (JSON), or its event stream (SSE).",
            "content": {SSE_MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        202: {"model": TurnAccepted, "description": "Accepted; not finished within the wait"},
        404: {"description": "No such session (of yours)"},
        409: {"description": "A turn is already in progress in this session"},
    },
)
async def progress_story(
    body: StoryProgressRequest,
    request: Request,
    user: CurrentUser,
    bus: Bus,
    settings: SettingsDep,
    db: DbForCall,
    accept: Annotated[str | None, Header(max_length=1000)] = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=200,
            description="`respond-async`: answer 202 at once; `wait=N`: wait at most N s.",
        ),
    ] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    last_event_id: LastEventIdHeader = None,
) -> Any:
    """Ask for the next beat of the story.

    Without `Accept: text/event-stream`, waits up to API_PROGRESS_WAIT_S (or `Prefer:
    wait=N`) and answers 200 with the turn's result, or 202 with its `events_url` and
    `status_url` if it is not narrated by then.

    With `Accept: text/event-stream`: the turn's Server-Sent Events: `turn.accepted`,
    `narration.started`, `narration.delta`, `narration.completed`, `image.requested`,
    `image.progress`, `image.ready`, `image.failed`, and last `turn.completed` or
    `turn.failed` (data: a StoryProgressResponse). Each event has an `id`: send the last one
    back as `Last-Event-ID` (here, or to `GET /api/turns/{id}/events`) to resume on any
    replica with nothing missed and nothing repeated.

    A turn already in progress in the session is a 409 (one turn at a time per session, on
    every replica together); a used-up daily budget a 429. With an `Idempotency-Key`, a
    retried request maps to the same turn (stored once). A `Last-Event-ID` resumes the
    stream of the turn it names instead of asking for a new one.
    """
    sse = wants_event_stream(accept)
    locks: TurnLocks | None = request.app.state.turn_locks
    if last_event_id:
        cursor = parse_cursor(last_event_id)
        return await _resume(body, user, bus.js, locks, cursor, sse, settings)

    if await read_model.get_session(db, body.session_id, user.id) is None:
        raise HTTPException(404, f"no session {body.session_id}")
    over = await check_budget(
        db,
        user.id,
        max_tokens=settings.daily_token_budget,
        max_cost_usd=settings.daily_cost_budget_usd,
    )
    if over is not None:
        raise ProblemError(429, over.detail, headers={"Retry-After": str(over.retry_after_s)})

    if idempotency_key:
        turn_id = uuid5(NAMESPACE_URL, f"taleforge:{user.id}:{body.session_id}:{idempotency_key}")
    else:
        turn_id = uuid4()
    if locks is None:
        raise LockUnavailable("the turn locks are not open (NATS was down at start-up)")
    held = await locks.acquire(body.session_id, turn_id)
    if isinstance(held, Busy):
        raise ProblemError(
            409,
            f"turn {held.turn_id} is still in progress in this session; wait for it to end",
            turn_id=str(held.turn_id),
            events_url=events_url(held.turn_id),
        )
    event = TurnRequested(
        event_id=uuid5(turn_id, TurnRequested.TYPE),
        session_id=body.session_id,
        user_id=user.id,
        turn_id=turn_id,
        input_type=body.input_type,
        text=body.text,
    )
    try:
        start = await bus.publish(event)
    except BaseException:
        await locks.release(body.session_id, turn_id)
        raise
    feed = TurnFeed(
        bus.js,
        session_id=body.session_id,
        turn_id=turn_id,
        cursor=Cursor.beginning(start),
        on_outcome=release_on_outcome(locks, body.session_id, turn_id),
    )
    if sse:
        return stream_response(feed, heartbeat_s=settings.sse_heartbeat_s)
    wait_s = wait_preference(prefer, settings.progress_wait_s)
    if wait_s <= 0:
        return accepted(turn_id, body.session_id, start)
    return ResultResponse(feed, wait_s=wait_s)


async def _resume(
    body: StoryProgressRequest,
    user: CurrentUser,
    js: Any,
    locks: TurnLocks | None,
    cursor: Cursor,
    sse: bool,
    settings: SettingsDep,
) -> Response:
    """A client that lost the stream of its turn asks again with the last id it saw."""
    requested = await request_of_cursor(js, cursor, user)
    if requested.session_id != body.session_id:
        raise ProblemError(404, "no such turn of yours in this session for this event id")
    turn_id: UUID = requested.turn_id
    feed = TurnFeed(
        js,
        session_id=requested.session_id,
        turn_id=turn_id,
        cursor=cursor,
        on_outcome=release_on_outcome(locks, requested.session_id, turn_id),
    )
    if sse:
        return stream_response(feed, heartbeat_s=settings.sse_heartbeat_s)
    # A plain request for a turn already asked for: its result, or where to follow it.
    return ResultResponse(feed, wait_s=settings.progress_wait_s)
