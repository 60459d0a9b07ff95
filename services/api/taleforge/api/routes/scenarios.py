"""The scenarios a player can start a session from."""

from __future__ import annotations

from fastapi import APIRouter

from taleforge.api.deps import CurrentUser, DbSession
from taleforge.api.scenarios import published_scenarios
from taleforge.api.session_models import ScenarioPublic

router = APIRouter(prefix="/api/scenarios", tags=["sessions"])


@router.get("", response_model=list[ScenarioPublic])
async def list_scenarios(user: CurrentUser, db: DbSession) -> list[ScenarioPublic]:
    """Published scenarios (the bundled default first); start one with `POST /api/sessions`."""
    return [
        ScenarioPublic(scenario_id=s.id, title=s.title, opening=s.opening)
        for s in await published_scenarios(db)
    ]
