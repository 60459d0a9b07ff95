"""Save games: save the story where it stands, list my saves, load one, delete one.

A save keeps the session's story line up to its last completed turn (`save.created`).
Loading it (`session.restored`) makes that turn the head again: later turns leave the
story line (they stay readable by id, as a branch), the history shows the line from the
save, and the narrator rewinds its memory, so the next turn continues from the save. Both
are refused with 409 while a turn is in progress, so a save never misses, and a load never
races, a beat still being written.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID, uuid4, uuid5

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.api.adapters import read_model, story_reads
from taleforge.api.deps import Bus, CurrentUser, DbSession, SettingsDep
from taleforge.api.routes.sessions import owned_session, session_detail, until_projected
from taleforge.api.session_models import (
    MAX_OFFSET,
    PAGE_LIMIT,
    Responses,
    SaveCreate,
    SavePublic,
    SavesPage,
    SessionDetail,
)
from taleforge.contracts import SaveCreated, SaveDeleted, SessionRestored

router = APIRouter(prefix="/api/story", tags=["saves"])

BUSY = "a turn is in progress in this session; try again once it has finished"
NO_SAVE: Responses = {404: {"description": "No such save of yours"}}


def save_public(row: Row[Any]) -> SavePublic:
    return SavePublic(
        save_id=row.id,
        session_id=row.session_id,
        turn_id=row.turn_id,
        turn_seq=row.turn_seq,
        title=row.title,
        created_at=row.created_at,
    )


async def _refuse_while_busy(db: AsyncConnection, session_id: UUID, user_id: UUID) -> None:
    if await story_reads.turn_in_progress(db, session_id, user_id):
        raise HTTPException(409, BUSY)


async def _owned_save(db: AsyncConnection, save_id: UUID, user_id: UUID) -> Row[Any]:
    row = await story_reads.get_save(db, save_id, user_id)
    if row is None:
        raise HTTPException(404, f"no save {save_id}")
    return row


@router.post(
    "/save",
    status_code=201,
    response_model=SavePublic,
    responses={
        202: {"model": SavePublic, "description": "Accepted; not yet visible to reads."},
        404: {"description": "No such session of yours"},
        409: {"description": "A turn is in progress in this session"},
    },
)
async def create_save(
    body: SaveCreate,
    user: CurrentUser,
    bus: Bus,
    db: DbSession,
    settings: SettingsDep,
    response: Response,
) -> SavePublic:
    """Save the session's story as it stands: up to its last completed turn."""
    await owned_session(db, body.session_id, user.id)
    await _refuse_while_busy(db, body.session_id, user.id)
    turn = await story_reads.newest_completed_turn(db, body.session_id, user.id)
    event = SaveCreated(
        session_id=body.session_id,
        user_id=user.id,
        turn_id=turn.id if turn is not None else None,
        save_id=uuid4(),
        title=body.title,
    )
    await bus.publish(event)
    row = await until_projected(settings, lambda: story_reads.get_save(db, event.save_id, user.id))
    if row is not None:
        return save_public(row)
    response.status_code = 202
    return SavePublic(
        save_id=event.save_id,
        session_id=event.session_id,
        turn_id=event.turn_id,
        turn_seq=turn.seq if turn is not None else None,
        title=event.title,
        created_at=event.occurred_at,
    )


@router.get("/saves", response_model=SavesPage)
async def list_saves(
    user: CurrentUser,
    db: DbSession,
    session_id: Annotated[UUID | None, Query(description="Only this session's saves.")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SavesPage:
    """My saves, newest first."""
    rows = await story_reads.list_saves(
        db, user.id, session_id=session_id, limit=limit + 1, offset=offset
    )
    return SavesPage(
        items=[save_public(row) for row in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get(
    "/load",
    response_model=SessionDetail,
    responses={
        **NO_SAVE,
        202: {"model": SessionDetail, "description": "Loading; reads may not show it yet."},
        409: {"description": "A turn is in progress in this session"},
    },
)
async def load_save(
    save_id: Annotated[UUID, Query(description="The save to go back to.")],
    user: CurrentUser,
    bus: Bus,
    db: DbSession,
    settings: SettingsDep,
    response: Response,
    history: Annotated[int, Query(ge=0, le=PAGE_LIMIT)] = 20,
) -> SessionDetail:
    """Restore the save's session to the save: the story continues from its turn."""
    save = await _owned_save(db, save_id, user.id)
    session = await owned_session(db, save.session_id, user.id)
    await _refuse_while_busy(db, save.session_id, user.id)
    await bus.publish(
        SessionRestored(
            session_id=save.session_id, user_id=user.id, turn_id=save.turn_id, save_id=save_id
        )
    )

    async def restored() -> Row[Any] | None:
        row = await read_model.get_session(db, save.session_id, user.id)
        return row if row is not None and row.head_turn_id == save.turn_id else None

    row = await until_projected(settings, restored)
    if row is None:
        response.status_code = 202
        row = session
    return await session_detail(db, row, user.id, history=history)


@router.delete(
    "/saves/{save_id}",
    status_code=204,
    response_class=Response,
    responses={**NO_SAVE, 202: {"description": "Deleting; not yet gone from reads."}},
)
async def delete_save(
    save_id: UUID, user: CurrentUser, bus: Bus, db: DbSession, settings: SettingsDep
) -> Response:
    save = await _owned_save(db, save_id, user.id)
    await bus.publish(
        SaveDeleted(
            event_id=uuid5(save_id, SaveDeleted.TYPE),
            session_id=save.session_id,
            user_id=user.id,
            save_id=save_id,
        )
    )

    async def gone() -> bool:
        return await story_reads.get_save(db, save_id, user.id) is None

    done = await until_projected(settings, gone)
    return Response(status_code=204 if done else 202)
