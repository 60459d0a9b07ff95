"""Players and what they spent (from the usage ledger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query

from taleforge.api.adapters import admin_reads
from taleforge.api.admin_models import UsersPage, UserUsage
from taleforge.api.models import UsageDay
from taleforge.api.routes.admin.deps import FORBIDDEN, AdminDb
from taleforge.api.session_models import MAX_OFFSET, PAGE_LIMIT

router = APIRouter(prefix="/users")

Days = Annotated[int, Query(ge=1, le=366, description="Usage of the last N days (UTC).")]


def _since(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days - 1)


@router.get("", response_model=UsersPage, responses=FORBIDDEN)
async def list_users(
    db: AdminDb,
    days: Days = 30,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> UsersPage:
    """Every player with a session or usage, the most recently active first."""
    rows = await admin_reads.users_with_usage(
        db, since=_since(days).date(), limit=limit + 1, offset=offset
    )
    return UsersPage(
        items=[UserUsage.model_validate(row, from_attributes=True) for row in rows[:limit]],
        days=days,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get(
    "/{user_id}/usage",
    response_model=list[UsageDay],
    responses={**FORBIDDEN, 404: {"description": "No sessions and no usage for this id"}},
)
async def read_user_usage(user_id: UUID, db: AdminDb, days: Days = 30) -> list[UsageDay]:
    """One player's tokens and cost per UTC day, newest first."""
    if not await admin_reads.user_exists(db, user_id):
        raise HTTPException(404, f"no player {user_id}")
    rows = await admin_reads.user_days(db, user_id, since=_since(days).date())
    return [UsageDay.model_validate(row, from_attributes=True) for row in rows]
