"""Request and response bodies of the HTTP API, in families per resource."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from taleforge.api.text import MAX_INPUT_CHARS, normalize_text
from taleforge.contracts import ImageKind, InputType, TokenUsage

TurnStatus = Literal["pending", "narrating", "completed", "failed"]
ImageStatus = Literal["pending", "completed", "failed"]


class _Request(BaseModel):
    # Unknown fields are refused: a typo should not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class SessionCreate(_Request):
    scenario_id: str | None = Field(None, max_length=200, examples=["default"])
    title: str | None = Field(None, max_length=200, description="Defaults to the scenario's.")

    @field_validator("title")
    @classmethod
    def _clean_title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalize_text(value).replace("\n", " ") or None


class SessionPublic(BaseModel):
    session_id: UUID
    scenario_id: str
    title: str
    opening: str
    created_at: datetime
    updated_at: datetime | None = Field(None, description="Last played, renamed or loaded.")
    turn_count: int = Field(0, description="Turns requested so far, on every story line.")


class StoryProgressRequest(_Request):
    session_id: UUID
    input_type: InputType
    text: str = Field(
        "",
        validate_default=True,  # a missing text is as empty as "" and gets the same check
        description=(
            "What the player says or does; normalised (NFC, control characters removed, "
            f"stripped), at most {MAX_INPUT_CHARS} characters. Empty only for `continue`."
        ),
    )

    @field_validator("text")
    @classmethod
    def _clean_text(cls, value: str, info: ValidationInfo) -> str:
        text = normalize_text(value)
        if len(text) > MAX_INPUT_CHARS:
            raise ValueError(f"text is longer than {MAX_INPUT_CHARS} characters ({len(text)})")
        input_type = info.data.get("input_type")
        if not text and input_type is not None and input_type != InputType.CONTINUE:
            raise ValueError(f"text must not be empty for input_type '{input_type}'")
        return text


class TurnAccepted(BaseModel):
    turn_id: UUID
    session_id: UUID
    status: Literal["pending"] = "pending"
    status_url: str
    events_url: str | None = Field(
        None, description="The turn's Server-Sent Events from its start (resumable)."
    )


class ImagePublic(BaseModel):
    image_id: UUID
    kind: ImageKind | str
    status: ImageStatus | str
    url: str | None = Field(None, description="Where the bytes are, once completed.")
    error: str | None = None


class TurnPublic(BaseModel):
    turn_id: UUID
    session_id: UUID
    seq: int | None = Field(None, description="Position in the session; set once recorded.")
    input_type: InputType | str
    text: str
    status: TurnStatus | str
    narration: str | None = None
    error: str | None = Field(None, description="Why the turn failed, readable by the player.")
    model: str | None = None
    usage: TokenUsage | None = None
    images: list[ImagePublic] = Field(default_factory=list)


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessPublic(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class UsageDay(BaseModel):
    """One UTC day of a player's usage ledger."""

    day: date
    completed_turns: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: float
