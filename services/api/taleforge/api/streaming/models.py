"""What a turn's stream and its waiting request send: the SSE events' data and the result."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from taleforge.api.models import ImagePublic
from taleforge.contracts import InputType, TokenUsage


class StoryProgressResponse(BaseModel):
    """A turn that is over (completed or failed), or whose narration is done while its
    images are still being drawn (`images[].status == "pending"`)."""

    turn_id: UUID
    session_id: UUID
    status: Literal["completed", "failed"]
    narration: str | None = Field(None, description="The whole narration (completed turns).")
    model: str | None = None
    usage: TokenUsage | None = None
    images: list[ImagePublic] = Field(default_factory=list)
    code: str | None = Field(None, description="Machine-readable cause (failed turns).")
    error: str | None = Field(None, description="Why the turn failed, readable by the player.")


class TurnAcceptedEvent(BaseModel):
    """`turn.accepted`: the turn is on the event log."""

    turn_id: UUID
    session_id: UUID
    input_type: InputType | str
    text: str


class NarrationStartedEvent(BaseModel):
    """`narration.started`: the narrator took the turn."""

    turn_id: UUID
    model: str


class NarrationDeltaEvent(BaseModel):
    """`narration.delta`: the next piece of narration. Append `text`; when `reset` is true
    the narrator retried the turn: first throw away what this turn's deltas said so far."""

    turn_id: UUID
    index: int = Field(description="Position of the delta within its attempt, from 0.")
    attempt: int
    reset: bool = False
    text: str


class NarrationCompletedEvent(BaseModel):
    """`narration.completed`: the whole narration (authoritative: it replaces the deltas)."""

    turn_id: UUID
    text: str
    model: str
    usage: TokenUsage
    image_ids: list[UUID] = Field(default_factory=list, description="Images still to come.")


class ImageRequestedEvent(BaseModel):
    """`image.requested`: a picture of this beat is being drawn."""

    turn_id: UUID
    image_id: UUID
    kind: str


class ImageProgressEvent(BaseModel):
    """`image.progress`: drawing progress (`value` of `max`); never goes backwards."""

    turn_id: UUID
    image_id: UUID
    value: int
    max: int
    nodes_done: int | None = None
    nodes_total: int | None = None


class ImageReadyEvent(BaseModel):
    """`image.ready`: the picture can be fetched from `url`."""

    turn_id: UUID
    image_id: UUID
    url: str
    width: int
    height: int


class ImageFailedEvent(BaseModel):
    """`image.failed`: no picture this time (the narration is unaffected)."""

    turn_id: UUID
    image_id: UUID
    reason: str


# `turn.completed` and `turn.failed` carry a `StoryProgressResponse`; the stream ends there.
SSE_EVENT_TYPES: dict[str, type[BaseModel]] = {
    "turn.accepted": TurnAcceptedEvent,
    "narration.started": NarrationStartedEvent,
    "narration.delta": NarrationDeltaEvent,
    "narration.completed": NarrationCompletedEvent,
    "image.requested": ImageRequestedEvent,
    "image.progress": ImageProgressEvent,
    "image.ready": ImageReadyEvent,
    "image.failed": ImageFailedEvent,
    "turn.completed": StoryProgressResponse,
    "turn.failed": StoryProgressResponse,
}
