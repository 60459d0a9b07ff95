"""The read model: tables the persistence service writes and the API reads with SQL.

Names here are a contract with the API's queries: rename nothing without changing both.
Every row of the projected tables is derived from the event log, so they can be rebuilt by
replay (`python -m taleforge.persistence rebuild`): `scenarios` too, since admins edit
the catalogue with `scenario.*` events.

Row-level security (migration 0003): a player (role `authenticated`, claims set per
transaction) sees only rows whose `user_id` is `auth.uid()`; `taleforge_admin` sees all; the
persistence writer owns the tables, so RLS does not apply to it. `taleforge_admin_read`
(migration 0004) reads every row and changes none: the API's admin endpoints use it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TURN_STATUSES = ("pending", "narrating", "completed", "failed")
IMAGE_STATUSES = ("pending", "completed", "failed")

# Deterministic constraint names, so migrations and downgrades can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Money in US dollars, to the millionth: token prices are fractions of a cent.
Money = Numeric(14, 6)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _zero(kind: Any = Integer) -> Mapped[int]:
    return mapped_column(kind, nullable=False, default=0, server_default=text("0"))


def _tz(nullable: bool = True) -> Mapped[datetime | None]:
    return mapped_column(DateTime(timezone=True), nullable=nullable)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _json_object() -> Mapped[dict[str, Any]]:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class Scenario(Base):
    """A story players can start. Sessions name it by `slug` (the events' `scenario_id`)."""

    __tablename__ = "scenarios"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    slug: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    summary: Mapped[str | None] = mapped_column(Text)
    opening: Mapped[str | None] = mapped_column(Text)
    # Narrator and illustrator parameters for this scenario (prompt, style, model…).
    settings: Mapped[dict[str, Any]] = _json_object()
    # The ScenarioSnapshot (world, tone, rules, characters, image policy) sessions copy.
    snapshot: Mapped[dict[str, Any]] = _json_object()
    published: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class StorySession(Base):
    __tablename__ = "story_sessions"
    __table_args__ = (
        # "My sessions, newest first": GET /api/sessions.
        Index("ix_story_sessions_user_id_updated_at", "user_id", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # The scenario's slug as the event recorded it. No foreign key: a session outlives edits
    # to (or the deletion of) the catalogue entry it started from, and replay must not
    # depend on catalogue rows the log does not contain.
    scenario_id: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    opening: Mapped[str | None] = mapped_column(Text)
    turn_count: Mapped[int] = _zero()
    # The newest turn of the line being played; the next turn's parent.
    head_turn_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("turns.id", ondelete="SET NULL", use_alter=True),
    )
    # Starts as {"scenario": <the ScenarioSnapshot the session started with>}; what the
    # narrator remembers goes here too once an event carries it.
    story_state: Mapped[dict[str, Any]] = _json_object()
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (
        # Also the index for "a session's turns in order".
        UniqueConstraint("session_id", "seq", name="uq_turns_session_id_seq"),
        CheckConstraint(f"status IN {TURN_STATUSES!r}", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("story_sessions.id", ondelete="CASCADE"), nullable=False
    )
    # The turn this one continues (None for a session's first turn), so branches can fork.
    parent_turn_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("turns.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # 1-based position in the session, in stream order.
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    input_type: Mapped[str | None] = mapped_column(Text)
    input_text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    # On the session's current story line (the head turn's ancestors). Loading a save takes
    # the turns after it off the line; they stay, readable by id, as a branch.
    in_story: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    narration: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = _zero()
    cached_tokens: Mapped[int] = _zero()
    output_tokens: Mapped[int] = _zero()
    reasoning_tokens: Mapped[int] = _zero()
    total_tokens: Mapped[int] = _zero()
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    response_id: Mapped[str | None] = mapped_column(Text)
    time_to_first_token_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error_code: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # The turn's creation time (the TurnRequested event's occurred_at).
    requested_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )
    started_at: Mapped[datetime | None] = _tz()
    completed_at: Mapped[datetime | None] = _tz()


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (CheckConstraint(f"status IN {IMAGE_STATUSES!r}", name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("story_sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    turn_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("turns.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    prompt: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    # The ComfyUI workflow template and its revision that rendered it (0 = as shipped).
    template: Mapped[str | None] = mapped_column(Text)
    template_version: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    bucket: Mapped[str | None] = mapped_column(Text)
    object_name: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = _tz()


class Save(Base):
    """A named snapshot of a session a player can load later."""

    __tablename__ = "saves"
    __table_args__ = (
        # "My saves, newest first": GET /api/story/saves.
        Index("ix_saves_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("story_sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    # The head turn when saved; loading rewinds the session to it.
    turn_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("turns.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(Text, nullable=False)
    snapshot: Mapped[dict[str, Any]] = _json_object()
    created_at: Mapped[datetime] = _now()


class UsageLedger(Base):
    """Tokens and cost per player and UTC day, summed from NarrationCompleted events."""

    __tablename__ = "usage_ledger"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    completed_turns: Mapped[int] = _zero()
    input_tokens: Mapped[int] = _zero(BigInteger)
    cached_tokens: Mapped[int] = _zero(BigInteger)
    output_tokens: Mapped[int] = _zero(BigInteger)
    reasoning_tokens: Mapped[int] = _zero(BigInteger)
    total_tokens: Mapped[int] = _zero(BigInteger)
    cost_usd: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = _now()


class ProcessedEvent(Base):
    """One row per applied event: the idempotency guard for redeliveries and replays."""

    __tablename__ = "processed_events"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    event_type: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    processed_at: Mapped[datetime] = _now()


class DeadLetter(Base):
    """A stream message the projection could not apply; an operator lists these."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    stream_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    subject: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    delivery_count: Mapped[int | None] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()
    # Operator retries (`dead_letter.retried`): how many, the last, and the copy's sequence.
    retry_count: Mapped[int] = _zero()
    last_retried_at: Mapped[datetime | None] = _tz()
    retried_as_seq: Mapped[int | None] = mapped_column(BigInteger)


class DeletedSession(Base):
    """A tombstone: the session was deleted (its rows are gone); later events are ignored."""

    __tablename__ = "deleted_sessions"

    session_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SettingsChange(Base):
    """One `settings.changed`: who changed which live setting of which service, and when."""

    __tablename__ = "settings_changes"
    __table_args__ = (Index("ix_settings_changes_service_changed_at", "service", "changed_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    service: Mapped[str] = mapped_column(Text, nullable=False)
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    revision: Mapped[int | None] = mapped_column(BigInteger)
    changed_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
