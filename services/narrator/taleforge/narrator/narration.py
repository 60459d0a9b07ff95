"""Narrating one turn: the events it publishes and what each failure becomes.

Every stream event for a turn has an id derived from the turn (`uuid5(turn_id, type)`), so
a redelivered turn republishes the same ids and JetStream keeps only the first of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from taleforge.contracts import (
    Envelope,
    ImageKind,
    ImageRequested,
    NarrationCompleted,
    NarrationDelta,
    NarrationStarted,
    TurnFailed,
    TurnRequested,
)
from taleforge.narrator.model import (
    ModelReply,
    NarrationModel,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.prompting import build_prompt

log = logging.getLogger(__name__)

MAX_IMAGE_SUBJECT_CHARS = 300


class Bus(Protocol):
    async def publish_event(self, event: Envelope) -> None:
        """Publish to the stream and wait for the PubAck."""
        ...

    async def publish_live(self, event: Envelope) -> None:
        """Publish on core NATS (fast, not kept)."""
        ...


class Delivery(Protocol):
    """One JetStream delivery of a turn, as the narrator needs to settle it."""

    attempt: int

    async def ack(self) -> None: ...
    async def nack(self, delay_s: float) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_deliver: int
    backoff_s: float
    backoff_max_s: float
    heartbeat_s: float

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        backoff: float = min(self.backoff_s * 2.0 ** (attempt - 1), self.backoff_max_s)
        return max(backoff, retry_after_s or 0.0)


def event_id(turn_id: uuid.UUID, name: str) -> uuid.UUID:
    return uuid.uuid5(turn_id, name)


def image_seed(turn_id: uuid.UUID) -> int:
    return int.from_bytes(hashlib.sha256(turn_id.bytes).digest()[:4], "big")


def image_prompt(narration: str, style: str) -> str:
    """A short visual description: the narration's first sentence plus a style."""
    first = re.split(r"(?<=[.!?])\s", narration.strip(), maxsplit=1)[0]
    subject = first[:MAX_IMAGE_SUBJECT_CHARS].rstrip(" .!?") or "a quiet moment in the story"
    return f"{subject}, {style}"


@contextlib.asynccontextmanager
async def heartbeats(delivery: Delivery, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream the turn is still being worked on, so ack_wait does not expire."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await delivery.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Narrator:
    def __init__(
        self,
        *,
        bus: Bus,
        model: NarrationModel,
        model_name: str,
        retry: RetryPolicy,
        image_style: str,
    ) -> None:
        self._bus = bus
        self._model = model
        self._model_name = model_name
        self._retry = retry
        self._image_style = image_style

    async def handle(self, turn: TurnRequested, delivery: Delivery) -> None:
        """Narrate the turn and settle the delivery: ack, nack with a delay, or fail the turn."""
        try:
            async with heartbeats(delivery, self._retry.heartbeat_s):
                await self._narrate(turn, delivery.attempt)
        except PermanentModelError as exc:
            log.warning("turn %s failed for good: %s", turn.turn_id, exc)
            await self._fail(turn, exc.code, exc.reason)
        except Exception as exc:
            retry_after = exc.retry_after_s if isinstance(exc, TransientModelError) else None
            if isinstance(exc, TransientModelError):
                reason = exc.reason
            else:
                log.exception("turn %s hit an unexpected error", turn.turn_id)
                reason = f"internal error: {type(exc).__name__}"
            if delivery.attempt >= self._retry.max_deliver:
                log.warning(
                    "turn %s failed after %d deliveries: %s", turn.turn_id, delivery.attempt, reason
                )
                await self._fail(
                    turn,
                    "provider_unavailable",
                    f"The storyteller could not be reached after {delivery.attempt} attempts "
                    f"({reason}).",
                )
            else:
                delay = self._retry.delay_s(delivery.attempt, retry_after)
                log.info(
                    "turn %s attempt %d failed (%s); retrying in %.2f s",
                    turn.turn_id,
                    delivery.attempt,
                    reason,
                    delay,
                )
                await delivery.nack(delay)
                return
        await delivery.ack()

    async def _narrate(self, turn: TurnRequested, attempt: int) -> None:
        turn_id = turn.turn_id
        common = {"session_id": turn.session_id, "user_id": turn.user_id, "turn_id": turn_id}
        await self._bus.publish_event(
            NarrationStarted(
                event_id=event_id(turn_id, NarrationStarted.TYPE),
                model=self._model_name,
                attempt=attempt,
                **common,
            )
        )
        started = time.monotonic()
        first_token_at: float | None = None
        index = 0

        async def on_delta(text: str) -> None:
            nonlocal first_token_at, index
            if first_token_at is None:
                first_token_at = time.monotonic()
            live = NarrationDelta(
                event_id=event_id(turn_id, f"narration.delta:{attempt}:{index}"),
                index=index,
                delta=text,
                **common,
            )
            index += 1
            await self._bus.publish_live(live)

        metadata = {"session_id": str(turn.session_id), "turn_id": str(turn_id)}
        reply: ModelReply = await self._model.narrate(
            build_prompt(turn), on_delta=on_delta, metadata=metadata
        )
        finished = time.monotonic()
        await self._bus.publish_event(
            NarrationCompleted(
                event_id=event_id(turn_id, NarrationCompleted.TYPE),
                text=reply.text,
                model=reply.model,
                usage=reply.usage,
                response_id=reply.response_id,
                time_to_first_token_ms=None
                if first_token_at is None
                else (first_token_at - started) * 1000,
                duration_ms=(finished - started) * 1000,
                **common,
            )
        )
        image_id = event_id(turn_id, "image:scene")
        await self._bus.publish_event(
            ImageRequested(
                event_id=event_id(turn_id, ImageRequested.TYPE),
                image_id=image_id,
                kind=ImageKind.SCENE,
                prompt=image_prompt(reply.text, self._image_style),
                seed=image_seed(turn_id),
                **common,
            )
        )
        log.info(
            "narrated turn %s (%d chars, %d output tokens)",
            turn_id,
            len(reply.text),
            reply.usage.output_tokens,
        )

    async def _fail(self, turn: TurnRequested, code: str, reason: str) -> None:
        await self._bus.publish_event(
            TurnFailed(
                event_id=event_id(turn.turn_id, TurnFailed.TYPE),
                session_id=turn.session_id,
                user_id=turn.user_id,
                turn_id=turn.turn_id,
                code=code,
                reason=reason,
            )
        )
