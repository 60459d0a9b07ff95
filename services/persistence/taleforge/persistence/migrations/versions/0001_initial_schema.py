"""Initial read model: sessions, turns, images, processed events, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tz(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column[Any]:
    default = sa.text("now()") if now else None
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def _zero(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))


def upgrade() -> None:
    op.create_table(
        "story_sessions",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("scenario_id", sa.Text()),
        sa.Column("title", sa.Text()),
        sa.Column("opening", sa.Text()),
        _zero("turn_count"),
        _tz("created_at", nullable=False, now=True),
        _tz("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_story_sessions"),
    )
    op.create_index("ix_story_sessions_user_id", "story_sessions", ["user_id"])
    op.create_index("ix_story_sessions_updated_at", "story_sessions", ["updated_at"])

    op.create_table(
        "turns",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("session_id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("input_type", sa.Text()),
        sa.Column("input_text", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("narration", sa.Text()),
        sa.Column("model", sa.Text()),
        _zero("input_tokens"),
        _zero("cached_tokens"),
        _zero("output_tokens"),
        _zero("reasoning_tokens"),
        _zero("total_tokens"),
        sa.Column("response_id", sa.Text()),
        sa.Column("time_to_first_token_ms", sa.Float()),
        sa.Column("duration_ms", sa.Float()),
        sa.Column("error_code", sa.Text()),
        sa.Column("error", sa.Text()),
        _tz("requested_at", nullable=False, now=True),
        _tz("started_at"),
        _tz("completed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["story_sessions.id"],
            name="fk_turns_session_id_story_sessions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("session_id", "seq", name="uq_turns_session_id_seq"),
        sa.CheckConstraint(
            "status IN ('pending', 'narrating', 'completed', 'failed')", name="ck_turns_status"
        ),
    )
    op.create_index("ix_turns_session_id_seq", "turns", ["session_id", "seq"])

    op.create_table(
        "images",
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("session_id", UUID(as_uuid=True), nullable=False),
        sa.Column("turn_id", UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text()),
        sa.Column("seed", sa.BigInteger()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("bucket", sa.Text()),
        sa.Column("object_name", sa.Text()),
        sa.Column("content_type", sa.Text()),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("sha256", sa.Text()),
        sa.Column("error_code", sa.Text()),
        sa.Column("error", sa.Text()),
        _tz("requested_at", nullable=False, now=True),
        _tz("completed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["story_sessions.id"],
            name="fk_images_session_id_story_sessions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_id"], ["turns.id"], name="fk_images_turn_id_turns", ondelete="CASCADE"
        ),
        sa.CheckConstraint("status IN ('pending', 'completed', 'failed')", name="ck_images_status"),
    )
    op.create_index("ix_images_turn_id", "images", ["turn_id"])

    op.create_table(
        "processed_events",
        sa.Column("event_id", UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text()),
        sa.Column("session_id", UUID(as_uuid=True)),
        sa.Column("stream_seq", sa.BigInteger()),
        _tz("processed_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_processed_events"),
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),  # bigserial
        sa.Column("stream_seq", sa.BigInteger()),
        sa.Column("subject", sa.Text()),
        sa.Column("payload", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("delivery_count", sa.Integer()),
        _tz("first_seen_at", nullable=False, now=True),
        _tz("last_seen_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint("stream_seq", name="uq_dead_letters_stream_seq"),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("processed_events")
    op.drop_index("ix_images_turn_id", table_name="images")
    op.drop_table("images")
    op.drop_index("ix_turns_session_id_seq", table_name="turns")
    op.drop_table("turns")
    op.drop_index("ix_story_sessions_updated_at", table_name="story_sessions")
    op.drop_index("ix_story_sessions_user_id", table_name="story_sessions")
    op.drop_table("story_sessions")
