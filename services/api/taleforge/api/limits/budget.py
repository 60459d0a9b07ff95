"""A player's daily budget, checked before a turn is accepted: tokens and cost spent today
(UTC), from the usage ledger persistence keeps. The ledger lags the narrator by the
projection delay, so a burst of turns can overshoot a little; the next turn is refused."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.api.adapters.usage import spent_on


@dataclass(frozen=True, slots=True)
class OverBudget:
    detail: str
    retry_after_s: int


def seconds_to_midnight_utc(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).date()
    midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


async def check_budget(
    conn: AsyncConnection,
    user_id: UUID,
    *,
    max_tokens: int,
    max_cost_usd: float,
    now: datetime | None = None,
) -> OverBudget | None:
    """None when the player may start another turn today; else why not and for how long."""
    if max_tokens <= 0 and max_cost_usd <= 0:
        return None
    now = now or datetime.now(UTC)
    tokens, cost = await spent_on(conn, user_id, now.date())
    retry = seconds_to_midnight_utc(now)
    if max_tokens > 0 and tokens >= max_tokens:
        return OverBudget(
            f"today's token budget is used up ({tokens} of {max_tokens}); it renews at "
            "midnight UTC",
            retry,
        )
    if max_cost_usd > 0 and cost >= max_cost_usd:
        return OverBudget(
            f"today's budget is used up (${cost:.4f} of ${max_cost_usd:.2f}); it renews at "
            "midnight UTC",
            retry,
        )
    return None
