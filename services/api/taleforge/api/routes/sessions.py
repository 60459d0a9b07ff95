"""Story sessions: start one, read one."""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError

from taleforge.api.adapters import read_model
from taleforge.api.deps import Bus, CurrentUser, DbSession, SettingsDep
from taleforge.api.models import SessionCreate, SessionPublic
from taleforge.api.scenarios import DEFAULT_SCENARIO_ID, find_scenario
from taleforge.contracts import SessionStarted

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


def _public(row: object) -> SessionPublic:
    return SessionPublic(
        session_id=row.id,  # type: ignore[attr-defined]
        scenario_id=row.scenario_id,  # type: ignore[attr-defined]
        title=row.title,  # type: ignore[attr-defined]
        opening=row.opening or "",  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
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
    """Start a session from a scenario (the bundled default when the body is empty).

    Waits until the session is readable, so a turn can be posted right away; answers 202
    instead of 201 when persistence has not caught up in time.
    """
    body = body or SessionCreate()
    scenario = find_scenario(body.scenario_id)
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
    row = await read_model.wait_for_session(
        db,
        event.session_id,
        user.id,
        timeout_s=settings.session_visible_timeout_s,
        interval_s=settings.session_poll_interval_s,
    )
    if row is not None:
        return _public(row)
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
    )


@router.get("/{session_id}", response_model=SessionPublic, responses={404: {}})
async def read_session(session_id: UUID, user: CurrentUser, db: DbSession) -> SessionPublic:
    row = await read_model.get_session(db, session_id, user.id)
    if row is None:
        raise HTTPException(404, f"no session {session_id}")
    return _public(row)
