"""Queries over the read model the persistence service projects into Postgres.

Read-only: these tables mirror the persistence schema (it owns the migrations) and are never
created from here. Every query filters by the caller's user id, so another player's ids look
exactly like unknown ones.

Defence in depth: each request's transaction first becomes the player (`act_as`): the role
`authenticated` and the player's JWT claims, set for that transaction only, as Supabase's
PostgREST does. Row-level security then hides every other player's rows even from a query
that forgot its `user_id` filter.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    Uuid,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

metadata = MetaData()

# Only the columns the API reads: the tables hold more (timings, prompts, sizes), which
# persistence owns and nobody here asks for.
story_sessions = Table(
    "story_sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid),
    Column("scenario_id", Text),
    Column("title", Text),
    Column("opening", Text),
    Column("turn_count", Integer),
    Column("head_turn_id", Uuid),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("session_id", Uuid),
    Column("user_id", Uuid),
    Column("seq", Integer),
    Column("input_type", Text),
    Column("input_text", Text),
    Column("status", Text),
    Column("in_story", Boolean),
    Column("narration", Text),
    Column("model", Text),
    Column("input_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("output_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("total_tokens", Integer),
    Column("error", Text),
    Column("requested_at", DateTime(timezone=True)),
)

images = Table(
    "images",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("turn_id", Uuid),
    Column("user_id", Uuid),
    Column("kind", Text),
    Column("status", Text),
    Column("bucket", Text),
    Column("object_name", Text),
    Column("content_type", Text),
    Column("sha256", Text),
    Column("error", Text),
    Column("requested_at", DateTime(timezone=True)),
)

saves = Table(
    "saves",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid),
    Column("session_id", Uuid),
    Column("turn_id", Uuid),
    Column("title", Text),
    Column("created_at", DateTime(timezone=True)),
)


_ACT_AS = text(
    "SELECT set_config('role', :role, true), set_config('request.jwt.claims', :claims, true)"
)


async def act_as(conn: AsyncConnection, user_id: UUID, *, role: str = "authenticated") -> None:
    """Begin `conn`'s transaction as the player `user_id`, for that transaction only.

    `set_config(..., true)` is `SET LOCAL`: both settings end with the transaction, so a
    pooled connection never carries one player's identity into another's request. An empty
    `role` keeps the connection's own role (only the claims are set).
    """
    claims = json.dumps({"sub": str(user_id), "role": role or "authenticated"})
    if role:
        await conn.execute(_ACT_AS, {"role": role, "claims": claims})
    else:
        await conn.execute(
            text("SELECT set_config('request.jwt.claims', :claims, true)"), {"claims": claims}
        )


async def ping(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT 1"))


async def get_session(conn: AsyncConnection, session_id: UUID, user_id: UUID) -> Row[Any] | None:
    query = select(story_sessions).where(
        story_sessions.c.id == session_id, story_sessions.c.user_id == user_id
    )
    return (await conn.execute(query)).first()


async def get_turn(conn: AsyncConnection, turn_id: UUID, user_id: UUID) -> Row[Any] | None:
    query = select(turns).where(turns.c.id == turn_id, turns.c.user_id == user_id)
    return (await conn.execute(query)).first()


async def list_turn_images(conn: AsyncConnection, turn_id: UUID, user_id: UUID) -> list[Row[Any]]:
    query = (
        select(images)
        .where(images.c.turn_id == turn_id, images.c.user_id == user_id)
        .order_by(images.c.requested_at, images.c.id)
    )
    return list((await conn.execute(query)).all())


async def get_image(conn: AsyncConnection, image_id: UUID, user_id: UUID) -> Row[Any] | None:
    query = select(images).where(images.c.id == image_id, images.c.user_id == user_id)
    return (await conn.execute(query)).first()
