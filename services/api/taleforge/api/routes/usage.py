"""What a player has used: tokens and cost per day (UTC), from the usage ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from taleforge.api.adapters.usage import usage_by_day
from taleforge.api.deps import CurrentUser, DbSession, SettingsDep
from taleforge.api.models import UsageDay

router = APIRouter(prefix="/api/usage", tags=["usage"])


class UsagePublic(BaseModel):
    days: list[UsageDay] = Field(description="Days with any use, newest first.")
    total_tokens: int
    cost_usd: float
    daily_token_budget: int | None = Field(None, description="None: no token budget.")
    daily_cost_budget_usd: float | None = Field(None, description="None: no cost budget.")


@router.get("", response_model=UsagePublic)
async def read_usage(
    user: CurrentUser,
    db: DbSession,
    settings: SettingsDep,
    days: Annotated[
        int, Query(ge=1, le=366, description="How many days back, today included.")
    ] = 30,
) -> UsagePublic:
    """My tokens and cost by day, and the daily budgets they count against. The ledger is
    updated as turns are recorded (a moment after each turn completes)."""
    today = datetime.now(UTC).date()
    rows = await usage_by_day(db, user.id, since=today - timedelta(days=days - 1), until=today)
    listed = [
        UsageDay(
            day=row.day,
            completed_turns=row.completed_turns or 0,
            input_tokens=row.input_tokens or 0,
            cached_tokens=row.cached_tokens or 0,
            output_tokens=row.output_tokens or 0,
            reasoning_tokens=row.reasoning_tokens or 0,
            total_tokens=row.total_tokens or 0,
            cost_usd=float(row.cost_usd or 0),
        )
        for row in rows
    ]
    return UsagePublic(
        days=listed,
        total_tokens=sum(day.total_tokens for day in listed),
        cost_usd=round(sum(day.cost_usd for day in listed), 6),
        daily_token_budget=settings.daily_token_budget or None,
        daily_cost_budget_usd=settings.daily_cost_budget_usd or None,
    )
