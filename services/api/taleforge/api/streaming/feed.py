"""A turn's events, read from JetStream so that any API replica can serve (and resume) them.

Two ordered consumers feed one queue:
- STORY, the session's events from the turn's `TurnRequested` on (its outcome and images);
- LIVE, the turn's live subject (narration deltas, image progress). The narrator and the
  illustrator publish those on core NATS; the LIVE stream (declared by persistence) keeps
  them for a while, which is what makes a resume on another replica possible.

Events up to the resume cursor rebuild the turn's state without being sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.api.streaming.cursor import Cursor
from taleforge.api.streaming.turn_state import SseEvent, TurnState
from taleforge.contracts import (
    LIVE_STREAM_NAME,
    STREAM_NAME,
    Envelope,
    ImageCompleted,
    ImageFailed,
    InvalidEvent,
    NarrationCompleted,
    NarrationDelta,
    TurnFailed,
    TurnRequested,
    events_filter,
    live_subject,
    parse_event,
)

log = logging.getLogger(__name__)

STORY, LIVE = "story", "live"
_IDLE_HEARTBEAT_S = 5.0


class FeedUnavailable(Exception):
    """NATS could not give the turn's events (not connected, stream missing)."""


@dataclass(frozen=True, slots=True)
class Emitted:
    """An SSE event with the id a client resumes after."""

    id: str
    event: SseEvent


# Called once with the turn's outcome event (narration completed or turn failed).
OutcomeHook = Callable[[NarrationCompleted | TurnFailed], Awaitable[None]]


async def turn_request_at(js: JetStreamContext, seq: int) -> TurnRequested | None:
    """The `TurnRequested` stored at STORY sequence `seq`, or None if there is none."""
    try:
        raw = await js.get_msg(STREAM_NAME, seq)
    except NotFoundError:
        return None
    except (NatsError, TimeoutError) as exc:
        raise FeedUnavailable(f"cannot read {STREAM_NAME} #{seq}: {exc!r}") from exc
    try:
        event = parse_event(raw.data or b"")
    except InvalidEvent:
        return None
    return event if isinstance(event, TurnRequested) else None


async def find_turn_request(
    js: JetStreamContext, session_id: UUID, turn_id: UUID, *, timeout_s: float = 5.0
) -> int | None:
    """The STORY sequence of the turn's `TurnRequested`, or None.

    The session's last request is the usual answer (checked with one lookup); older turns
    are found by reading the session's requests from the start.
    """
    subject = events_filter(session_id, TurnRequested.TYPE)
    try:
        last = await js.get_last_msg(STREAM_NAME, subject)
    except NotFoundError:
        return None
    except (NatsError, TimeoutError) as exc:
        raise FeedUnavailable(f"cannot read {STREAM_NAME}: {exc!r}") from exc
    if _is_request_of(last.data, turn_id):
        return int(last.seq or 0) or None
    sub = await js.subscribe(
        subject,
        stream=STREAM_NAME,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    msg = await sub.next_msg(timeout=timeout_s)
                    seq = msg.metadata.sequence.stream
                    if _is_request_of(msg.data, turn_id):
                        return int(seq)
                    if seq >= (last.seq or 0):
                        return None
    finally:
        await _quietly_unsubscribe(sub)
    return None


async def _quietly_unsubscribe(sub: Any) -> None:
    # The consumer is ephemeral: the server removes it once nobody listens, even if this fails.
    try:
        await sub.unsubscribe()
    except Exception as exc:
        log.debug("unsubscribe failed: %r", exc)


def _peek(data: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _precedes(event: Envelope) -> Callable[[dict[str, Any]], bool]:
    """Which live messages the story event's own publisher sent before it: the narration's
    deltas before NarrationCompleted, an image's progress before its ImageCompleted/Failed."""
    if isinstance(event, NarrationCompleted):
        return lambda live: live.get("type") == NarrationDelta.TYPE
    image_id = str(getattr(event, "image_id", ""))
    return lambda live: live.get("type") == "image.progress" and live.get("image_id") == image_id


def _is_request_of(data: bytes | None, turn_id: UUID) -> bool:
    try:
        event = parse_event(data or b"")
    except InvalidEvent:
        return False
    return isinstance(event, TurnRequested) and event.turn_id == turn_id


class TurnFeed:
    """The SSE events of one turn after `cursor`; `events()` yields them, or None when
    nothing happened for `idle_s` (time for a heartbeat)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        session_id: UUID,
        turn_id: UUID,
        cursor: Cursor,
        on_outcome: OutcomeHook | None = None,
        drain_timeout_s: float = 2.0,
    ) -> None:
        self._js = js
        self._session_id = session_id
        self._turn_id = turn_id
        self.cursor = cursor
        self.state = TurnState(turn_id=turn_id, session_id=session_id, attempt=cursor.attempt)
        self._on_outcome = on_outcome
        self._drain_timeout_s = drain_timeout_s
        self._queue: asyncio.Queue[tuple[str, Msg]] = asyncio.Queue()
        self._deferred: deque[tuple[str, Msg]] = deque()
        self._early: list[tuple[str, Msg]] = []
        self._subs: list[Any] = []

    async def events(self, idle_s: float) -> AsyncGenerator[Emitted | None]:
        async with contextlib.aclosing(self.batches(idle_s)) as batches:
            async for batch in batches:
                if batch is None:
                    yield None
                    continue
                for emitted in batch:
                    yield emitted

    async def batches(self, idle_s: float) -> AsyncGenerator[list[Emitted] | None]:
        """Like `events()`, but the live messages already waiting come out as one list
        (never empty), so a stream that fell behind catches up in one write instead of one
        per event; nothing is held back to wait for more."""
        if self.cursor.ended:
            return
        try:
            await self._subscribe()
            while True:
                item = await self._next(idle_s)
                if item is None:
                    yield None
                    continue
                batch: list[Emitted] = []
                while item is not None:
                    if batch and item[0] == STORY:
                        # A story event may wait on NATS (the live catch-up, the lock's
                        # release): what is ready goes out first, not after that wait.
                        yield batch
                        batch = []
                    batch += await self._handle(*item)
                    if self.state.finished:
                        self.cursor = self.cursor.ending()
                        batch.append(Emitted(str(self.cursor), self.state.end_event()))
                        yield batch
                        return
                    item = self._ready()
                if batch:
                    yield batch
        finally:
            await self.close()

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        # Shielded: a client's disconnect cancels the response, and the consumers must go.
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            for sub in subs:
                await _quietly_unsubscribe(sub)

    async def _subscribe(self) -> None:
        def to_queue(source: str) -> Callable[[Msg], Awaitable[None]]:
            async def put(msg: Msg) -> None:
                self._queue.put_nowait((source, msg))

            return put

        story_from = self.cursor.start
        live_config = (
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.cursor.live + 1
            )
            if self.cursor.live
            else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        # Both consumers at once: each is a round trip to the JetStream API.
        results = await asyncio.gather(
            self._js.subscribe(
                events_filter(self._session_id),
                stream=STREAM_NAME,
                ordered_consumer=True,
                idle_heartbeat=_IDLE_HEARTBEAT_S,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=story_from
                ),
                cb=to_queue(STORY),
            ),
            self._js.subscribe(
                live_subject(self._session_id, self._turn_id),
                stream=LIVE_STREAM_NAME,
                ordered_consumer=True,
                idle_heartbeat=_IDLE_HEARTBEAT_S,
                config=live_config,
                cb=to_queue(LIVE),
            ),
            return_exceptions=True,
        )
        self._subs = [sub for sub in results if not isinstance(sub, BaseException)]
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await self.close()
            if isinstance(failed, NatsError | TimeoutError):
                raise FeedUnavailable(f"cannot follow turn {self._turn_id}: {failed!r}") from failed
            raise failed

    def _ready(self) -> tuple[str, Msg] | None:
        """The next message if one is waiting already, else None (never waits)."""
        if self._deferred:
            return self._deferred.popleft()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _next(self, idle_s: float) -> tuple[str, Msg] | None:
        ready = self._ready()
        if ready is not None:
            return ready
        try:
            # asyncio.timeout, not wait_for: no task per message on this hot path.
            async with asyncio.timeout(idle_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _live(self, msg: Msg) -> list[Emitted]:
        event, attempt = self.state.apply_live(msg.data)
        self.cursor = self.cursor.at_live(int(msg.metadata.sequence.stream), attempt)
        return [] if event is None else [Emitted(str(self.cursor), event)]

    async def _handle(self, source: str, msg: Msg) -> list[Emitted]:
        if source == LIVE:
            if self.cursor.story < self.cursor.start:
                # The turn's request (the first STORY message) has not come yet; a client
                # hears of the turn before it hears its words.
                self._early.append((source, msg))
                return []
            return self._live(msg)
        seq = int(msg.metadata.sequence.stream)
        try:
            story_event = parse_event(msg.data)
        except InvalidEvent as exc:
            log.warning("skipping %s #%d: %s", STREAM_NAME, seq, exc.reason)
            self.cursor = self.cursor.at_story(seq)
            return []
        outcome = (
            story_event
            if isinstance(story_event, NarrationCompleted | TurnFailed)
            and story_event.turn_id == self._turn_id
            else None
        )
        # The turn's live messages stored before this event go out before it.
        catch_up = isinstance(story_event, NarrationCompleted | ImageCompleted | ImageFailed)
        emitted: list[Emitted] = []
        if catch_up and story_event.turn_id == self._turn_id:
            emitted = await self._drain_live(
                until=msg.metadata.timestamp, before=_precedes(story_event)
            )
        replayed = seq <= self.cursor.story
        event = self.state.apply_story(story_event)
        self.cursor = self.cursor.at_story(seq)
        if outcome is not None and self._on_outcome is not None:
            try:
                await self._on_outcome(outcome)
            except Exception:
                log.exception("outcome hook failed for turn %s", self._turn_id)
        if not replayed and event is not None:
            emitted.append(Emitted(str(self.cursor), event))
        if self._early and self.cursor.story >= self.cursor.start:
            self._deferred.extendleft(reversed(self._early))
            self._early = []
        return emitted

    async def _drain_live(
        self, until: datetime, before: Callable[[dict[str, Any]], bool]
    ) -> list[Emitted]:
        """Send the turn's live messages (deltas, image progress) stored before a
        narration.completed or image.ready/failed (at `until`), ahead of it.

        They were stored first (the same publisher, in order), but the two consumers
        deliver independently: wait, briefly, until LIVE has caught up to that moment.
        """
        try:
            last = await self._js.get_last_msg(
                LIVE_STREAM_NAME, live_subject(self._session_id, self._turn_id)
            )
        except NotFoundError:
            return []
        except (NatsError, TimeoutError) as exc:
            log.warning("cannot ask LIVE how far turn %s went: %r", self._turn_id, exc)
            return []
        target = int(last.seq or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_timeout_s
        held: list[tuple[str, Msg]] = []
        emitted: list[Emitted] = []
        while self.cursor.live < target:
            if self._deferred:
                source, msg = self._deferred.popleft()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.warning("turn %s: LIVE did not catch up to #%d", self._turn_id, target)
                    break
                try:
                    async with asyncio.timeout(remaining):
                        source, msg = await self._queue.get()
                except TimeoutError:
                    continue
            if source == STORY:
                held.append((source, msg))
                continue
            # What the story event's publisher sent before it (`before`) goes first, whatever
            # the streams' clocks say (LIVE stores core publishes a little later); anything
            # else stored after the story event goes after it.
            if msg.metadata.timestamp > until and not before(_peek(msg.data)):
                self._deferred.appendleft((source, msg))
                break
            emitted += self._live(msg)
        # Story events held here come after the one being handled, in their order.
        self._deferred.extendleft(reversed(held))
        return emitted
