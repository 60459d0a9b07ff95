"""Reads of the usage ledger (tokens and cost per player per UTC day), projected by
persistence. Read-only, as the player (row-level security), like every read here."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import Column, Date, Integer, MetaData, Numeric, Row, Table, Uuid, select
from sqlalchemy.ext.asyncio import AsyncConnection

_metadata = MetaData()

usage_ledger = Table(
    "usage_ledger",
    _metadata,
    Column("user_id", Uuid),
    Column("day", Date),
    Column("completed_turns", Integer),
    Column("input_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("output_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("total_tokens", Integer),
    Column("cost_usd", Numeric(14, 6)),
)


async def spent_on(conn: AsyncConnection, user_id: UUID, day: date) -> tuple[int, float]:
    """(total tokens, cost in USD) of `user_id` on `day`; zeros if nothing was used."""
    query = select(usage_ledger.c.total_tokens, usage_ledger.c.cost_usd).where(
        usage_ledger.c.user_id == user_id, usage_ledger.c.day == day
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return 0, 0.0
    return int(row.total_tokens or 0), float(row.cost_usd or 0)


async def usage_by_day(
    conn: AsyncConnection, user_id: UUID, *, since: date, until: date
) -> list[Row[Any]]:
    """The ledger rows of `user_id` from `since` to `until` (inclusive), newest first."""
    query = (
        select(usage_ledger)
        .where(
            usage_ledger.c.user_id == user_id,
            usage_ledger.c.day >= since,
            usage_ledger.c.day <= until,
        )
        .order_by(usage_ledger.c.day.desc())
    )
    return list((await conn.execute(query)).all())
