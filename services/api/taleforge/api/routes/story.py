"""Moving the story on: the player's next line, action or "continue"."""

from __future__ import annotations

from typing import Annotated
from uuid import NAMESPACE_URL, uuid4, uuid5

from fastapi import APIRouter, Header, HTTPException

from taleforge.api.adapters import read_model
from taleforge.api.deps import Bus, CurrentUser, DbSession
from taleforge.api.models import StoryProgressRequest, TurnAccepted
from taleforge.contracts import TurnRequested

router = APIRouter(prefix="/api/story", tags=["story"])


@router.post(
    "/progress",
    status_code=202,
    response_model=TurnAccepted,
    responses={404: {"description": "No such session (of yours)"}, 422: {}},
)
async def progress_story(
    body: StoryProgressRequest,
    user: CurrentUser,
    bus: Bus,
    db: DbSession,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TurnAccepted:
    """Ask for the next beat. Poll `status_url` (or follow the live channel) for the result;
    it answers 404 until persistence has recorded the turn, usually milliseconds after this.

    With an `Idempotency-Key`, a retried request maps to the same turn and JetStream stores
    it once (within the stream's duplicate window).
    """
    session = await read_model.get_session(db, body.session_id, user.id)
    if session is None:
        raise HTTPException(404, f"no session {body.session_id}")
    if idempotency_key:
        turn_id = uuid5(NAMESPACE_URL, f"taleforge:{user.id}:{body.session_id}:{idempotency_key}")
    else:
        turn_id = uuid4()
    event = TurnRequested(
        event_id=uuid5(turn_id, TurnRequested.TYPE),
        session_id=body.session_id,
        user_id=user.id,
        turn_id=turn_id,
        input_type=body.input_type,
        text=body.text,
    )
    await bus.publish(event)
    return TurnAccepted(
        turn_id=turn_id, session_id=body.session_id, status_url=f"/api/turns/{turn_id}"
    )
