"""Story sessions: start one, list mine, read one with its story so far, rename, delete.

Every change is an event (`session.started`, `session.renamed`, `session.deleted`) that
persistence projects; the API never writes the database. Each route waits, briefly, until
the change is readable and answers 202 instead when persistence has not caught up in time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from uuid import UUID, uuid4, uuid5

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.api.adapters import read_model, story_reads
from taleforge.api.deps import Bus, CurrentUser, DbSession, SettingsDep
from taleforge.api.models import SessionCreate, SessionPublic
from taleforge.api.scenarios import DEFAULT_SCENARIO_ID, find_scenario
from taleforge.api.session_models import (
    MAX_OFFSET,
    MAX_SEQ,
    PAGE_LIMIT,
    Responses,
    SessionDetail,
    SessionRename,
    SessionsPage,
    TurnsPage,
)
from taleforge.api.settings import Settings
from taleforge.api.turn_views import turn_public
from taleforge.contracts import SessionDeleted, SessionRenamed, SessionStarted

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

NOT_FOUND: Responses = {404: {"description": "No such session of yours"}}
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT, description="Items per page.")]


def session_public(row: Row[Any]) -> SessionPublic:
    return SessionPublic(
        session_id=row.id,
        scenario_id=row.scenario_id,
        title=row.title,
        opening=row.opening or "",
        created_at=row.created_at,
        updated_at=row.updated_at,
        turn_count=row.turn_count or 0,
    )


async def history_page(
    db: AsyncConnection, session_id: UUID, user_id: UUID, *, limit: int, before: int | None
) -> TurnsPage:
    """The story line's turns before seq `before` (the newest `limit`), oldest first."""
    rows = await story_reads.story_line(db, session_id, user_id, limit=limit + 1, before=before)
    more, rows = len(rows) > limit, rows[:limit]
    rows.reverse()
    images = await story_reads.images_of(db, [row.id for row in rows], user_id)
    by_turn: dict[UUID, list[Row[Any]]] = {}
    for image in images:
        by_turn.setdefault(image.turn_id, []).append(image)
    next_before = rows[0].seq if more and rows else None
    return TurnsPage(
        items=[turn_public(row, by_turn.get(row.id, ())) for row in rows],
        next_before=next_before,
        older_url=(
            f"/api/sessions/{session_id}/turns?before={next_before}&limit={limit}"
            if next_before is not None
            else None
        ),
    )


async def session_detail(
    db: AsyncConnection, row: Row[Any], user_id: UUID, *, history: int
) -> SessionDetail:
    page = (
        await history_page(db, row.id, user_id, limit=history, before=None)
        if history
        else TurnsPage(items=[])
    )
    return SessionDetail(**session_public(row).model_dump(), history=page)


async def owned_session(db: AsyncConnection, session_id: UUID, user_id: UUID) -> Row[Any]:
    row = await read_model.get_session(db, session_id, user_id)
    if row is None:
        raise HTTPException(404, f"no session {session_id}")
    return row


async def until_projected(settings: Settings, check: Callable[[], Awaitable[T]]) -> T | None:
    """`check()` until it answers (truthy), within API_SESSION_VISIBLE_TIMEOUT_S; else None."""
    return await story_reads.poll(
        check,
        timeout_s=settings.session_visible_timeout_s,
        interval_s=settings.session_poll_interval_s,
    )


@router.post(
    "",
    status_code=201,
    response_model=SessionPublic,
    responses={
        202: {"model": SessionPublic, "description": "Accepted; not yet visible to reads."},
        422: {"description": "Invalid body or unknown scenario"},
    },
)
async def create_session(
    user: CurrentUser,
    bus: Bus,
    db: DbSession,
    settings: SettingsDep,
    response: Response,
    body: SessionCreate | None = None,
) -> SessionPublic:
    """Start a session from a scenario: a published stored one, else a bundled one (the
    bundled default when the body is empty).

    Waits until the session is readable, so a turn can be posted right away; answers 202
    instead of 201 when persistence has not caught up in time.
    """
    body = body or SessionCreate()
    scenario = await find_scenario(db, body.scenario_id)
    if scenario is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "scenario_id"),
                    "msg": f"unknown scenario '{body.scenario_id}' (try '{DEFAULT_SCENARIO_ID}')",
                    "type": "value_error",
                }
            ]
        )
    event = SessionStarted(
        session_id=uuid4(),
        user_id=user.id,
        scenario_id=scenario.id,
        title=body.title or scenario.title,
        opening=scenario.opening,
        scenario=scenario.snapshot,
    )
    await bus.publish(event)
    row = await until_projected(
        settings, lambda: read_model.get_session(db, event.session_id, user.id)
    )
    if row is not None:
        return session_public(row)
    log.warning(
        "session %s not projected within %ss", event.session_id, settings.session_visible_timeout_s
    )
    response.status_code = 202
    return SessionPublic(
        session_id=event.session_id,
        scenario_id=event.scenario_id,
        title=event.title,
        opening=event.opening,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
    )


@router.get("", response_model=SessionsPage)
async def list_sessions(
    user: CurrentUser,
    db: DbSession,
    limit: Limit = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SessionsPage:
    """My sessions, the most recently played first."""
    rows = await story_reads.list_sessions(db, user.id, limit=limit + 1, offset=offset)
    more = len(rows) > limit
    return SessionsPage(
        items=[session_public(row) for row in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/{session_id}", response_model=SessionDetail, responses=NOT_FOUND)
async def read_session(
    session_id: UUID,
    user: CurrentUser,
    db: DbSession,
    history: Annotated[
        int, Query(ge=0, le=PAGE_LIMIT, description="How many recent turns to include.")
    ] = 20,
) -> SessionDetail:
    """The session and the most recent turns of its story line (narration, image URLs)."""
    row = await owned_session(db, session_id, user.id)
    return await session_detail(db, row, user.id, history=history)


@router.get("/{session_id}/turns", response_model=TurnsPage, responses=NOT_FOUND)
async def read_history(
    session_id: UUID,
    user: CurrentUser,
    db: DbSession,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_SEQ, description="Only turns before this seq (`next_before`)."),
    ] = None,
    limit: Limit = 20,
) -> TurnsPage:
    """A page of the story line, oldest first; follow `older_url` for the turns before it."""
    await owned_session(db, session_id, user.id)
    return await history_page(db, session_id, user.id, limit=limit, before=before)


@router.patch(
    "/{session_id}",
    response_model=SessionPublic,
    responses={**NOT_FOUND, 202: {"model": SessionPublic, "description": "Not yet visible."}},
)
async def rename_session(
    session_id: UUID,
    body: SessionRename,
    user: CurrentUser,
    bus: Bus,
    db: DbSession,
    settings: SettingsDep,
    response: Response,
) -> SessionPublic:
    row = await owned_session(db, session_id, user.id)
    if row.title == body.title:
        return session_public(row)
    await bus.publish(SessionRenamed(session_id=session_id, user_id=user.id, title=body.title))

    async def renamed() -> Row[Any] | None:
        current = await read_model.get_session(db, session_id, user.id)
        return current if current is not None and current.title == body.title else None

    updated = await until_projected(settings, renamed)
    if updated is not None:
        return session_public(updated)
    response.status_code = 202
    return session_public(row).model_copy(update={"title": body.title})


@router.delete(
    "/{session_id}",
    status_code=204,
    response_class=Response,
    responses={**NOT_FOUND, 202: {"description": "Deleting; not yet gone from reads."}},
)
async def delete_session(
    session_id: UUID, user: CurrentUser, bus: Bus, db: DbSession, settings: SettingsDep
) -> Response:
    """Delete the session with its turns, images and saves. Later turns on it are refused."""
    await owned_session(db, session_id, user.id)
    # One id per session: a repeated DELETE within the duplicate window is stored once.
    await bus.publish(
        SessionDeleted(
            event_id=uuid5(session_id, SessionDeleted.TYPE), session_id=session_id, user_id=user.id
        )
    )

    async def gone() -> bool:
        return await read_model.get_session(db, session_id, user.id) is None

    if await until_projected(settings, gone):
        return Response(status_code=204)
    return Response(status_code=202)
