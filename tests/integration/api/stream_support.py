"""For the API's streaming and limits tests: API replicas served over real HTTP (uvicorn in a
thread each, so a client can drop a stream and come back elsewhere), an SSE reader, and a
stand-in narrator/illustrator that publishes a turn's events the way the services do."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from nats.aio.client import Client as NatsClient

from taleforge.api.app import create_app
from taleforge.api.auth import issue_token
from taleforge.api.settings import DEV_JWT_SECRET, Settings
from taleforge.contracts import (
    Envelope,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    NarrationDelta,
    NarrationStarted,
    TokenUsage,
    TurnFailed,
    TurnRequested,
    live_subject,
    parse_event,
    publish_headers,
)
from taleforge.sandboxes.serving import serve_in_thread


def auth(user_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user_id, secret=DEV_JWT_SECRET)}"}


SSE = {"Accept": "text/event-stream"}


@contextlib.contextmanager
def replica(nats_url: str, database_url: str, **overrides: Any) -> Iterator[str]:
    """One API replica over HTTP (its own NATS connection and pool); yields its base URL."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "stream_wait_s": 5.0,
        "sse_heartbeat_s": 0.5,
        **overrides,
    }
    with serve_in_thread(create_app(Settings(**values))) as url:
        yield url


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: Any


@dataclass
class SseReader:
    """Reads one SSE response event by event (comments are counted, not returned)."""

    response: httpx.Response
    comments: int = 0
    _lines: AsyncIterator[str] | None = None

    async def next(self) -> SseEvent | None:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "event" in fields or "data" in fields:
                    return SseEvent(
                        fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
                    )
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        return None

    async def until_end(self) -> list[SseEvent]:
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


@dataclass
class FakeNarrator:
    """Publishes a turn's events as the narrator and illustrator would: stream events with
    their deterministic ids and Msg-Id, live deltas on core NATS (which LIVE captures)."""

    nc: NatsClient
    published: list[Envelope] = field(default_factory=list)

    async def next_request(self, session_id: uuid.UUID, timeout: float = 20.0) -> TurnRequested:
        """The next TurnRequested of the session, as the narrator's consumer would get it."""
        js = self.nc.jetstream()
        sub = await js.subscribe(f"story.events.{session_id}.turn.requested", ordered_consumer=True)
        try:
            while True:
                msg = await sub.next_msg(timeout=timeout)
                event = parse_event(msg.data)
                assert isinstance(event, TurnRequested)
                if event.event_id not in {e.event_id for e in self.published}:
                    self.published.append(event)
                    return event
        finally:
            await sub.unsubscribe()

    async def story(self, event: Envelope) -> None:
        await self.nc.jetstream().publish(
            event.subject(), event.to_bytes(), headers=publish_headers(event)
        )

    async def deltas(self, turn: TurnRequested, pieces: list[str], attempt: int = 1) -> None:
        for index, piece in enumerate(pieces):
            delta = NarrationDelta(
                event_id=uuid.uuid5(turn.turn_id, f"narration.delta:{attempt}:{index}"),
                session_id=turn.session_id,
                user_id=turn.user_id,
                turn_id=turn.turn_id,
                index=index,
                delta=piece,
                attempt=attempt,
            )
            await self.nc.publish(live_subject(turn.session_id, turn.turn_id), delta.to_bytes())
        await self.nc.flush()

    async def progress(self, turn: TurnRequested, image_id: uuid.UUID, value: int) -> None:
        message = {
            "type": "image.progress",
            "session_id": str(turn.session_id),
            "turn_id": str(turn.turn_id),
            "image_id": str(image_id),
            "value": value,
            "max": 10,
            "nodes_done": 1,
            "nodes_total": 2,
        }
        await self.nc.publish(
            live_subject(turn.session_id, turn.turn_id), json.dumps(message).encode()
        )
        await self.nc.flush()

    def _common(self, turn: TurnRequested) -> dict[str, Any]:
        return {"session_id": turn.session_id, "user_id": turn.user_id, "turn_id": turn.turn_id}

    async def started(self, turn: TurnRequested) -> None:
        await self.story(
            NarrationStarted(
                event_id=uuid.uuid5(turn.turn_id, NarrationStarted.TYPE),
                model="sandbox-model",
                **self._common(turn),
            )
        )

    async def completed(
        self, turn: TurnRequested, text: str, image_ids: list[uuid.UUID] | None = None
    ) -> None:
        await self.story(
            NarrationCompleted(
                event_id=uuid.uuid5(turn.turn_id, NarrationCompleted.TYPE),
                text=text,
                model="sandbox-model",
                usage=TokenUsage(input_tokens=50, output_tokens=20, total_tokens=70),
                image_ids=image_ids or [],
                **self._common(turn),
            )
        )

    async def failed(self, turn: TurnRequested, reason: str = "The storyteller is away.") -> None:
        await self.story(
            TurnFailed(
                event_id=uuid.uuid5(turn.turn_id, TurnFailed.TYPE),
                code="provider_unavailable",
                reason=reason,
                **self._common(turn),
            )
        )

    async def image_requested(self, turn: TurnRequested, image_id: uuid.UUID) -> None:
        await self.story(
            ImageRequested(
                event_id=uuid.uuid5(turn.turn_id, "image:scene"),
                image_id=image_id,
                prompt="a lantern by a river",
                **self._common(turn),
            )
        )

    async def image_completed(self, turn: TurnRequested, image_id: uuid.UUID) -> None:
        await self.story(
            ImageCompleted(
                event_id=uuid.uuid5(image_id, "image.completed"),
                image_id=image_id,
                bucket="taleforge-images",
                object_name=f"{turn.session_id}/{image_id}.png",
                size_bytes=100,
                sha256="0" * 64,
                width=512,
                height=512,
                **self._common(turn),
            )
        )

    async def image_failed(self, turn: TurnRequested, image_id: uuid.UUID) -> None:
        await self.story(
            ImageFailed(
                event_id=uuid.uuid5(image_id, "image.failed"),
                image_id=image_id,
                code="render_failed",
                reason="the painter spilled the ink",
                **self._common(turn),
            )
        )
