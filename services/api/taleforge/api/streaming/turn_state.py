"""One turn as its events tell it: what to send the client for each message, and when it is
over. Pure: no I/O, so every rule here is tested without a server.

Each STORY or LIVE message gives at most one SSE event, and the turn's end gives one more
(`turn.completed` / `turn.failed`); the cursor (see `cursor.py`) then says exactly what a
client has seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from taleforge.api.models import ImagePublic
from taleforge.api.streaming.models import (
    ImageFailedEvent,
    ImageProgressEvent,
    ImageReadyEvent,
    ImageRequestedEvent,
    NarrationCompletedEvent,
    NarrationStartedEvent,
    StoryProgressResponse,
    TurnAcceptedEvent,
)
from taleforge.contracts import (
    Envelope,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    NarrationDelta,
    NarrationStarted,
    TurnFailed,
    TurnRequested,
)


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    # A model, or for the hot path (every delta) the model's fields as a plain dict.
    data: BaseModel | dict[str, Any]

    def json(self) -> str:
        if isinstance(self.data, dict):
            return json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return self.data.model_dump_json()


@dataclass
class _Image:
    image_id: UUID
    kind: str = "scene"
    status: str = "pending"
    error: str | None = None

    def public(self) -> ImagePublic:
        done = self.status == "completed"
        return ImagePublic(
            image_id=self.image_id,
            kind=self.kind,
            status=self.status,
            url=image_url(self.image_id) if done else None,
            error=self.error if self.status == "failed" else None,
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def image_url(image_id: UUID) -> str:
    return f"/api/images/{image_id}"


@dataclass
class TurnState:
    turn_id: UUID
    session_id: UUID
    # The highest narrator attempt whose deltas the client has (from the cursor on resume).
    attempt: int = 0
    requested: TurnRequested | None = None
    completed: NarrationCompleted | None = None
    failed: TurnFailed | None = None
    images: dict[UUID, _Image] = field(default_factory=dict)

    # ---- STORY ----------------------------------------------------------------------------

    def apply_story(self, event: Envelope) -> SseEvent | None:
        """Take one STORY event of the session; the SSE event it makes, if any."""
        if event.turn_id != self.turn_id:
            return None
        if isinstance(event, TurnRequested):
            self.requested = event
            return SseEvent(
                "turn.accepted",
                TurnAcceptedEvent(
                    turn_id=event.turn_id,
                    session_id=event.session_id,
                    input_type=event.input_type,
                    text=event.text,
                ),
            )
        if self.finished:
            return None
        if isinstance(event, NarrationStarted):
            return SseEvent(
                "narration.started", NarrationStartedEvent(turn_id=self.turn_id, model=event.model)
            )
        if isinstance(event, NarrationCompleted):
            self.completed = event
            for image_id in event.image_ids or []:
                self._image(image_id)
            return SseEvent(
                "narration.completed",
                NarrationCompletedEvent(
                    turn_id=self.turn_id,
                    text=event.text,
                    model=event.model,
                    usage=event.usage,
                    image_ids=list(event.image_ids or []),
                ),
            )
        if isinstance(event, TurnFailed):
            self.failed = event
            return None  # the end event says it
        if isinstance(event, ImageRequested):
            self._image(event.image_id).kind = str(event.kind)
            return SseEvent(
                "image.requested",
                ImageRequestedEvent(
                    turn_id=self.turn_id, image_id=event.image_id, kind=str(event.kind)
                ),
            )
        if isinstance(event, ImageCompleted):
            self._image(event.image_id).status = "completed"
            return SseEvent(
                "image.ready",
                ImageReadyEvent(
                    turn_id=self.turn_id,
                    image_id=event.image_id,
                    url=image_url(event.image_id),
                    width=event.width,
                    height=event.height,
                ),
            )
        if isinstance(event, ImageFailed):
            image = self._image(event.image_id)
            image.status, image.error = "failed", event.reason
            return SseEvent(
                "image.failed",
                ImageFailedEvent(
                    turn_id=self.turn_id, image_id=event.image_id, reason=event.reason
                ),
            )
        return None

    def _image(self, image_id: UUID) -> _Image:
        """The turn's image `image_id`, pending until an event says otherwise."""
        return self.images.setdefault(image_id, _Image(image_id))

    # ---- LIVE -----------------------------------------------------------------------------

    def apply_live(self, payload: bytes) -> tuple[SseEvent | None, int]:
        """Take one LIVE message of the turn: the SSE event it makes (if any) and the
        attempt the client's deltas are now at."""
        if self.finished:
            return None, self.attempt
        try:
            data: Any = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, self.attempt
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == NarrationDelta.TYPE:
            if self.completed is not None:
                return None, self.attempt  # the whole narration was sent; pieces add nothing
            return self._delta(data), self.attempt
        if kind == "image.progress":
            return self._progress(data), self.attempt
        return None, self.attempt

    def _delta(self, data: dict[str, Any]) -> SseEvent | None:
        # Read by hand, not through the contract model: this runs for every piece of every
        # story being told, and only these three fields matter here.
        index, text, attempt = data.get("index"), data.get("delta"), data.get("attempt", 1)
        if not (_is_count(index) and isinstance(text, str) and _is_count(attempt) and attempt):
            return None
        if attempt < self.attempt:
            return None  # a stale attempt still talking after a newer one began
        reset = self.attempt > 0 and attempt > self.attempt
        self.attempt = attempt
        # The fields of NarrationDeltaEvent.
        return SseEvent(
            "narration.delta",
            {
                "turn_id": str(self.turn_id),
                "index": index,
                "attempt": attempt,
                "reset": reset,
                "text": text,
            },
        )

    def _progress(self, data: dict[str, Any]) -> SseEvent | None:
        try:
            event = ImageProgressEvent(
                turn_id=self.turn_id,
                image_id=data["image_id"],
                value=data["value"],
                max=data["max"],
                nodes_done=data.get("nodes_done"),
                nodes_total=data.get("nodes_total"),
            )
        except (KeyError, ValueError):
            return None
        image = self.images.get(event.image_id)
        if image is not None and image.status != "pending":
            return None
        return SseEvent("image.progress", event)

    # ---- the end --------------------------------------------------------------------------

    @property
    def narrated(self) -> bool:
        return self.completed is not None or self.failed is not None

    @property
    def finished(self) -> bool:
        if self.failed is not None:
            return True
        if self.completed is None:
            return False
        return all(image.status != "pending" for image in self.images.values())

    def result(self) -> StoryProgressResponse | None:
        """The turn's result once narrated (images may still be pending), else None."""
        if self.failed is not None:
            return StoryProgressResponse(
                turn_id=self.turn_id,
                session_id=self.session_id,
                status="failed",
                code=self.failed.code,
                error=self.failed.reason,
            )
        if self.completed is None:
            return None
        return StoryProgressResponse(
            turn_id=self.turn_id,
            session_id=self.session_id,
            status="completed",
            narration=self.completed.text,
            model=self.completed.model,
            usage=self.completed.usage,
            images=[image.public() for image in self.images.values()],
        )

    def end_event(self) -> SseEvent:
        result = self.result()
        assert result is not None and self.finished, "the turn is not over"
        return SseEvent(f"turn.{result.status}", result)
