"""Read-model queries for admins: every player's rows, read as `taleforge_admin_read`.

That role (migration 0004) may SELECT every row of every table and change none, so these
queries see all players while the API still never writes the database.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.api.scenarios import scenarios

PAYLOAD_CHARS = 4000


async def list_scenarios(conn: AsyncConnection) -> list[Row[Any]]:
    query = select(scenarios).order_by(scenarios.c.slug)
    return list((await conn.execute(query)).all())


async def get_scenario(conn: AsyncConnection, slug: str) -> Row[Any] | None:
    return (await conn.execute(select(scenarios).where(scenarios.c.slug == slug))).first()


_USERS = text(
    """
    WITH usage AS (
        SELECT user_id, sum(completed_turns) AS completed_turns,
               sum(total_tokens) AS total_tokens, sum(cost_usd) AS cost_usd,
               max(updated_at) AS last_usage
          FROM usage_ledger WHERE day >= :since GROUP BY user_id
    ), played AS (
        SELECT user_id, count(*) AS sessions, max(updated_at) AS last_played
          FROM story_sessions GROUP BY user_id
    )
    SELECT coalesce(u.user_id, p.user_id) AS user_id,
           coalesce(p.sessions, 0) AS sessions,
           coalesce(u.completed_turns, 0) AS completed_turns,
           coalesce(u.total_tokens, 0) AS total_tokens,
           coalesce(u.cost_usd, 0) AS cost_usd,
           greatest(u.last_usage, p.last_played) AS last_active
      FROM usage AS u FULL OUTER JOIN played AS p ON p.user_id = u.user_id
     ORDER BY last_active DESC NULLS LAST, user_id
     LIMIT :limit OFFSET :offset
    """
)


async def users_with_usage(
    conn: AsyncConnection, *, since: date, limit: int, offset: int
) -> list[Row[Any]]:
    """Every player with sessions or usage: usage summed since `since`, last active first."""
    params = {"since": since, "limit": limit, "offset": offset}
    return list((await conn.execute(_USERS, params)).all())


async def user_days(conn: AsyncConnection, user_id: UUID, *, since: date) -> list[Row[Any]]:
    query = text(
        "SELECT * FROM usage_ledger WHERE user_id = :user_id AND day >= :since ORDER BY day DESC"
    )
    return list((await conn.execute(query, {"user_id": user_id, "since": since})).all())


async def user_exists(conn: AsyncConnection, user_id: UUID) -> bool:
    query = text(
        "SELECT EXISTS (SELECT FROM story_sessions WHERE user_id = :u)"
        " OR EXISTS (SELECT FROM usage_ledger WHERE user_id = :u)"
    )
    return bool(await conn.scalar(query, {"u": user_id}))


_DEAD_LETTER_COLUMNS = f"""
    stream_seq, subject, reason, delivery_count, left(payload, {PAYLOAD_CHARS}) AS payload,
    first_seen_at, last_seen_at, retry_count, last_retried_at, retried_as_seq
"""


async def list_dead_letters(conn: AsyncConnection, *, limit: int, offset: int) -> list[Row[Any]]:
    query = text(
        f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters"
        " ORDER BY last_seen_at DESC, id DESC LIMIT :limit OFFSET :offset"
    )
    return list((await conn.execute(query, {"limit": limit, "offset": offset})).all())


async def get_dead_letter(conn: AsyncConnection, stream_seq: int) -> Row[Any] | None:
    query = text(f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE stream_seq = :seq")
    return (await conn.execute(query, {"seq": stream_seq})).first()


async def settings_history(
    conn: AsyncConnection, *, service: str | None, limit: int
) -> list[Row[Any]]:
    where = "WHERE service = :service" if service else ""
    query = text(
        f"SELECT * FROM settings_changes {where} ORDER BY changed_at DESC, event_id LIMIT :limit"
    )
    return list((await conn.execute(query, {"service": service, "limit": limit})).all())
