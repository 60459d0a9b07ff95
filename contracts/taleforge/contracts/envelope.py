"""The envelope every Taleforge event carries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields common to every event.

    `event_id` doubles as the JetStream `Nats-Msg-Id`, so a publish retried within the
    stream's duplicate window is stored once. Subclasses pin `type` and `schema_version`
    with `Literal`s so a payload of another type or version fails validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    # The routing token in subjects, e.g. "turn.requested"; set by each subclass.
    TYPE: ClassVar[str]
    # Highest schema_version of this type that this code reads and writes.
    VERSION: ClassVar[int] = 1

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; the Nats-Msg-Id.")
    type: str
    schema_version: int
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    session_id: UUID
    user_id: UUID = Field(description="The player (Supabase auth `sub`) the session belongs to.")
    turn_id: UUID | None = None

    def subject(self) -> str:
        from taleforge.contracts.subjects import event_subject

        subject: str = event_subject(self.session_id, self.type)
        return subject

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
