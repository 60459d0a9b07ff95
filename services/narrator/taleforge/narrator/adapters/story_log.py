"""Reading the STORY stream: a session's start, and whether a turn was already settled."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    ImageRequested,
    InvalidEvent,
    NarrationCompleted,
    SessionStarted,
    TurnFailed,
    event_subject,
    parse_event,
)


class JetStreamStoryLog:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def _last(self, session_id: uuid.UUID, event_type: str) -> object | None:
        try:
            msg = await self._js.get_last_msg(STREAM_NAME, event_subject(session_id, event_type))
        except NotFoundError:
            return None
        try:
            return parse_event(msg.data or b"")
        except InvalidEvent:
            return None

    async def session_started(self, session_id: uuid.UUID) -> SessionStarted | None:
        event = await self._last(session_id, SessionStarted.TYPE)
        return event if isinstance(event, SessionStarted) else None

    async def _each(self, session_id: uuid.UUID, event_type: str) -> AsyncIterator[object]:
        """The session's events of one type, oldest first (one server request each)."""
        subject = event_subject(session_id, event_type)
        seq = 1
        while True:
            try:
                msg = await self._js.get_msg(STREAM_NAME, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return
            try:
                yield parse_event(msg.data or b"")
            except InvalidEvent:
                pass
            seq = int(msg.seq or seq) + 1

    async def image_requested(self, session_id: uuid.UUID, image_id: uuid.UUID) -> bool:
        """Is there an ImageRequested for `image_id` on the stream?"""
        last = await self._last(session_id, ImageRequested.TYPE)
        if isinstance(last, ImageRequested) and last.image_id == image_id:
            return True
        async for event in self._each(session_id, ImageRequested.TYPE):
            if isinstance(event, ImageRequested) and event.image_id == image_id:
                return True
        return False

    async def settled(
        self, session_id: uuid.UUID, turn_id: uuid.UUID
    ) -> NarrationCompleted | TurnFailed | None:
        """The turn's outcome on the stream, if it has one."""
        for event_type in (NarrationCompleted.TYPE, TurnFailed.TYPE):
            event = await self._last(session_id, event_type)
            if isinstance(event, NarrationCompleted | TurnFailed) and event.turn_id == turn_id:
                return event
        # Not the session's latest outcome (a later turn settled since): look through them.
        for event_type in (NarrationCompleted.TYPE, TurnFailed.TYPE):
            async for event in self._each(session_id, event_type):
                if isinstance(event, NarrationCompleted | TurnFailed) and event.turn_id == turn_id:
                    return event
        return None
