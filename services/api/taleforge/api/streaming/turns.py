"""Following a turn for a request: as an SSE stream, or by waiting for its result.

Shared by `POST /api/story/progress` and `GET /api/turns/{id}/events`, so both answer alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any
from uuid import UUID

from fastapi import Header, Query, Response
from fastapi.responses import JSONResponse
from nats.js import JetStreamContext

from taleforge.api.auth import User
from taleforge.api.limits.turn_lock import TurnLocks
from taleforge.api.models import TurnAccepted
from taleforge.api.problems import ProblemError
from taleforge.api.streaming.cursor import Cursor, InvalidCursor
from taleforge.api.streaming.feed import OutcomeHook, TurnFeed, turn_request_at
from taleforge.api.streaming.models import StoryProgressResponse
from taleforge.api.streaming.sse import event_stream
from taleforge.contracts import NarrationCompleted, TurnFailed, TurnRequested

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=100,
        description="Resume after this event id (EventSource sends it when it reconnects).",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Same as the Last-Event-ID header, for clients that cannot set headers.",
    ),
]


def parse_cursor(text: str) -> Cursor:
    try:
        return Cursor.parse(text)
    except InvalidCursor as exc:
        raise ProblemError(400, str(exc)) from exc


def turn_url(turn_id: UUID) -> str:
    return f"/api/turns/{turn_id}"


def events_url(turn_id: UUID, cursor: Cursor | None = None) -> str:
    url = f"/api/turns/{turn_id}/events"
    return f"{url}?last_event_id={cursor}" if cursor is not None else url


async def request_of_cursor(
    js: JetStreamContext, cursor: Cursor, user: User, *, turn_id: UUID | None = None
) -> TurnRequested:
    """The turn a client's event id points at, if it is the caller's (else 404, as for any
    id that is not theirs)."""
    request = await turn_request_at(js, cursor.start)
    if (
        request is None
        or request.user_id != user.id
        or (turn_id is not None and request.turn_id != turn_id)
    ):
        raise ProblemError(404, "no such turn of yours for this event id")
    return request


def release_on_outcome(
    locks: TurnLocks | None, session_id: UUID, turn_id: UUID
) -> OutcomeHook | None:
    """The feed's outcome hook: the session may take its next turn."""
    if locks is None:
        return None

    async def release(_outcome: NarrationCompleted | TurnFailed) -> None:
        await locks.release(session_id, turn_id)

    return release


def stream_response(feed: TurnFeed, *, heartbeat_s: float) -> Response:
    if feed.cursor.ended:
        # The client saw the end already; 204 tells EventSource not to reconnect again.
        return Response(status_code=204)
    return event_stream(feed, heartbeat_s=heartbeat_s, turn_url=turn_url(feed.state.turn_id))


class ResultResponse(Response):
    """Waits for the turn's result when it is sent (after the route returned and gave its
    database connection back), then answers 200 with it, or 202 if not narrated in time."""

    def __init__(self, feed: TurnFeed, *, wait_s: float) -> None:
        super().__init__(status_code=200, media_type="application/json")
        self.feed = feed
        self.wait_s = wait_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        result = await wait_for_result(self.feed, self.wait_s)
        state = self.feed.state
        response: Response
        if result is not None:
            response = JSONResponse(result.model_dump(mode="json"))
        else:
            response = accepted(state.turn_id, state.session_id, self.feed.cursor.start)
        await response(scope, receive, send)


async def wait_for_result(feed: TurnFeed, wait_s: float) -> StoryProgressResponse | None:
    """Follow the feed until the turn is over or `wait_s` passes; its result if narrated
    by then (images possibly still pending), else None."""
    if wait_s > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async with contextlib.aclosing(feed.events(idle_s=wait_s)) as events:
                    async for _ in events:
                        pass
    await feed.close()
    return feed.state.result()


def accepted(turn_id: UUID, session_id: UUID, start: int) -> JSONResponse:
    body = TurnAccepted(
        turn_id=turn_id,
        session_id=session_id,
        status_url=turn_url(turn_id),
        events_url=events_url(turn_id, Cursor.beginning(start)),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": turn_url(turn_id)}
    )


def wait_preference(prefer: str | None, configured_s: float) -> float:
    """How long to wait, from an RFC 7240 `Prefer` header: `respond-async` means not at
    all, `wait=N` at most N seconds; never longer than configured."""
    if not prefer:
        return configured_s
    wait = configured_s
    for token in prefer.lower().replace(";", ",").split(","):
        name, _, value = token.strip().partition("=")
        if name == "respond-async":
            return 0.0
        if name == "wait":
            with contextlib.suppress(ValueError):
                wait = min(wait, max(0.0, float(value.strip().strip('"'))))
    return wait
