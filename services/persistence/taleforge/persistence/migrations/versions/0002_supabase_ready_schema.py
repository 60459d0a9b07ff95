"""Supabase-ready schema: scenarios, saves, a daily usage ledger, turn parents, head turns.

Adds to 0001 (never edited: it may be applied already): `story_sessions.head_turn_id` and
`story_state`, `turns.parent_turn_id` and `cost_usd`, `images.template` and
`template_version`, the tables `scenarios`, `saves` and `usage_ledger`, and the indexes the
API's queries use. Rows already
there are backfilled (parents and heads from turn order, the ledger from completed turns), so
a development database keeps working without a rebuild.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(14, 6)


def _now(name: str) -> sa.Column[Any]:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    )


def _json_object(name: str) -> sa.Column[Any]:
    return sa.Column(name, JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))


def _zero(name: str, kind: Any = sa.BigInteger) -> sa.Column[Any]:
    return sa.Column(name, kind(), nullable=False, server_default=sa.text("0"))


BACKFILL = """
UPDATE turns AS t SET parent_turn_id = p.id
  FROM turns AS p
 WHERE p.session_id = t.session_id AND p.seq = t.seq - 1;

UPDATE story_sessions AS s SET head_turn_id = t.id
  FROM turns AS t
 WHERE t.session_id = s.id AND t.seq = s.turn_count;

INSERT INTO usage_ledger (user_id, day, completed_turns, input_tokens, cached_tokens,
                          output_tokens, reasoning_tokens, total_tokens, cost_usd, updated_at)
SELECT user_id, (completed_at AT TIME ZONE 'UTC')::date, count(*), sum(input_tokens),
       sum(cached_tokens), sum(output_tokens), sum(reasoning_tokens), sum(total_tokens),
       coalesce(sum(cost_usd), 0), max(completed_at)
  FROM turns
 WHERE status = 'completed' AND completed_at IS NOT NULL
 GROUP BY 1, 2;
"""


def upgrade() -> None:
    op.create_table(
        "scenarios",
        sa.Column(
            "id", UUID(as_uuid=True), nullable=False, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text()),
        sa.Column("opening", sa.Text()),
        _json_object("settings"),
        sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_scenarios"),
        sa.UniqueConstraint("slug", name="uq_scenarios_slug"),
    )

    op.add_column("story_sessions", sa.Column("head_turn_id", UUID(as_uuid=True)))
    op.add_column("story_sessions", _json_object("story_state"))
    op.create_foreign_key(
        "fk_story_sessions_head_turn_id_turns",
        "story_sessions",
        "turns",
        ["head_turn_id"],
        ["id"],
        ondelete="SET NULL",
    )
    # (user_id, updated_at) serves "mine, newest first" and lookups by user alone.
    op.drop_index("ix_story_sessions_user_id", table_name="story_sessions")
    op.create_index(
        "ix_story_sessions_user_id_updated_at", "story_sessions", ["user_id", "updated_at"]
    )

    op.add_column("turns", sa.Column("parent_turn_id", UUID(as_uuid=True)))
    op.add_column("turns", sa.Column("cost_usd", MONEY))
    op.create_foreign_key(
        "fk_turns_parent_turn_id_turns",
        "turns",
        "turns",
        ["parent_turn_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_turns_parent_turn_id", "turns", ["parent_turn_id"])
    op.create_index("ix_turns_requested_at", "turns", ["requested_at"])
    # uq_turns_session_id_seq already indexes (session_id, seq); this one only cost writes.
    op.drop_index("ix_turns_session_id_seq", table_name="turns")

    op.add_column("images", sa.Column("template", sa.Text()))
    op.add_column("images", sa.Column("template_version", sa.Integer()))
    op.create_index("ix_images_session_id", "images", ["session_id"])

    op.create_table(
        "saves",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("session_id", UUID(as_uuid=True), nullable=False),
        sa.Column("turn_id", UUID(as_uuid=True)),
        sa.Column("title", sa.Text(), nullable=False),
        _json_object("snapshot"),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_saves"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["story_sessions.id"],
            name="fk_saves_session_id_story_sessions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_id"], ["turns.id"], name="fk_saves_turn_id_turns", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_saves_user_id_created_at", "saves", ["user_id", "created_at"])
    op.create_index("ix_saves_session_id", "saves", ["session_id"])

    op.create_table(
        "usage_ledger",
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _zero("completed_turns", sa.Integer),
        _zero("input_tokens"),
        _zero("cached_tokens"),
        _zero("output_tokens"),
        _zero("reasoning_tokens"),
        _zero("total_tokens"),
        sa.Column("cost_usd", MONEY, nullable=False, server_default=sa.text("0")),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("user_id", "day", name="pk_usage_ledger"),
    )

    for statement in BACKFILL.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.drop_table("usage_ledger")
    op.drop_index("ix_saves_session_id", table_name="saves")
    op.drop_index("ix_saves_user_id_created_at", table_name="saves")
    op.drop_table("saves")

    op.drop_index("ix_images_session_id", table_name="images")
    op.drop_column("images", "template_version")
    op.drop_column("images", "template")

    op.create_index("ix_turns_session_id_seq", "turns", ["session_id", "seq"])
    op.drop_index("ix_turns_requested_at", table_name="turns")
    op.drop_index("ix_turns_parent_turn_id", table_name="turns")
    op.drop_constraint("fk_turns_parent_turn_id_turns", "turns", type_="foreignkey")
    op.drop_column("turns", "cost_usd")
    op.drop_column("turns", "parent_turn_id")

    op.drop_index("ix_story_sessions_user_id_updated_at", table_name="story_sessions")
    op.create_index("ix_story_sessions_user_id", "story_sessions", ["user_id"])
    op.drop_constraint("fk_story_sessions_head_turn_id_turns", "story_sessions", type_="foreignkey")
    op.drop_column("story_sessions", "story_state")
    op.drop_column("story_sessions", "head_turn_id")

    op.drop_table("scenarios")
