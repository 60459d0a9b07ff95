"""The indexes behind the API's queries, shown with EXPLAIN on a few thousand rows.

Each query is written the way the API asks it; the plan must use the named index and no
sequential scan. (With ~20 rows per player the planner may still sort them after a bitmap
scan rather than walk the index backwards; both use the index.)
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from ...support import asyncpg_dsn

pytestmark = pytest.mark.integration

FILL = """
INSERT INTO story_sessions (id, user_id, title, turn_count, created_at, updated_at)
SELECT gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad((g % 200)::text, 12, '0'))::uuid,
       'tale ' || g, 4, now() - g * interval '1 minute', now() - g * interval '1 minute'
  FROM generate_series(1, 4000) AS g;
INSERT INTO turns (id, session_id, user_id, seq, status, requested_at)
SELECT gen_random_uuid(), s.id, s.user_id, n, 'completed', s.created_at + n * interval '1 s'
  FROM story_sessions s, generate_series(1, 4) AS n;
INSERT INTO images (id, session_id, turn_id, user_id, status)
SELECT gen_random_uuid(), t.session_id, t.id, t.user_id, 'completed' FROM turns t;
INSERT INTO saves (id, user_id, session_id, title, created_at)
SELECT gen_random_uuid(), s.user_id, s.id, 'save', s.updated_at FROM story_sessions s;
INSERT INTO usage_ledger (user_id, day, completed_turns)
SELECT DISTINCT user_id, d::date, 1 FROM story_sessions,
       generate_series(current_date - 59, current_date, interval '1 day') AS d;
ANALYZE;
"""

USER = uuid.UUID("00000000-0000-0000-0000-000000000007")

# (what the API asks, the SQL, the index that must serve it, the parameters)
QUERIES = [
    (
        "my sessions, newest first (paged)",
        "SELECT * FROM story_sessions WHERE user_id = $1 ORDER BY updated_at DESC LIMIT 20",
        "ix_story_sessions_user_id_updated_at",
        ("user",),
    ),
    (
        "a session's turns in order",
        "SELECT * FROM turns WHERE session_id = $1 ORDER BY seq",
        "uq_turns_session_id_seq",
        ("session",),
    ),
    (
        "a turn's images",
        "SELECT * FROM images WHERE turn_id = $1 AND user_id = $2",
        "ix_images_turn_id",
        ("turn", "user"),
    ),
    (
        "my saves, newest first",
        "SELECT * FROM saves WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
        "ix_saves_user_id_created_at",
        ("user",),
    ),
    (
        "my usage this month",
        "SELECT * FROM usage_ledger WHERE user_id = $1 AND day >= current_date - 30",
        "pk_usage_ledger",
        ("user",),
    ),
    (
        "recently active sessions (admin)",
        "SELECT * FROM story_sessions ORDER BY updated_at DESC LIMIT 50",
        "ix_story_sessions_updated_at",
        (),
    ),
]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def test_the_api_queries_use_their_indexes(migrated_database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(migrated_database_url))
    try:
        await conn.execute(FILL)
        session_id = await conn.fetchval(
            "SELECT id FROM story_sessions WHERE user_id = $1 LIMIT 1", USER
        )
        turn_id = await conn.fetchval("SELECT id FROM turns WHERE session_id = $1", session_id)
        values = {"user": USER, "session": session_id, "turn": turn_id}
        for what, sql, index, params in QUERIES:
            args = [values[name] for name in params]
            text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            nodes = _nodes(json.loads(text)[0]["Plan"])
            used = {node.get("Index Name") for node in nodes}
            kinds = {node["Node Type"] for node in nodes}
            assert index in used, f"{what}: {sql} planned as {kinds} with {used}"
            assert "Seq Scan" not in kinds, f"{what}: sequential scan"
    finally:
        await conn.close()
