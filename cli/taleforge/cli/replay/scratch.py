"""Scratch adapters for the narrator: a replay runs the real `Narrator` against these.

Nothing here reaches live state: session state lives in memory, events and live deltas go
to `replay.<run_id>.events.…` / `replay.<run_id>.live.…` (core NATS, outside the STORY
stream's `story.events.>` and the players' `story.live.>`), and settings are fixed per turn.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from nats.aio.client import Client

from taleforge.contracts import NarrationCompleted, SessionStarted, TurnFailed
from taleforge.contracts.envelope import Envelope
from taleforge.narrator.live_settings import LiveSettings
from taleforge.narrator.story import SessionState

REPLAY_PREFIX = "replay"


def replay_prefix(run_id: str) -> str:
    return f"{REPLAY_PREFIX}.{run_id}"


class ScratchBus:
    """Collects what the narrator publishes, and mirrors it on the run's own subjects."""

    def __init__(self, nc: Client | None, run_id: str) -> None:
        self._nc = nc
        self.prefix = replay_prefix(run_id)
        self.by_turn: dict[uuid.UUID | None, list[Envelope]] = defaultdict(list)

    async def publish_event(self, event: Envelope) -> None:
        self.by_turn[event.turn_id].append(event)
        if self._nc is not None:
            subject = f"{self.prefix}.events.{event.session_id}.{event.type}"
            await self._nc.publish(subject, event.to_bytes())

    async def publish_live(self, event: Envelope) -> None:
        if self._nc is not None:
            subject = f"{self.prefix}.live.{event.session_id}.{event.turn_id}"
            await self._nc.publish(subject, event.to_bytes())


class ScratchStore:
    """Session state in memory, seeded with the recorded state the replay starts from."""

    def __init__(self) -> None:
        self.states: dict[uuid.UUID, SessionState] = {}

    async def load(self, session_id: uuid.UUID) -> SessionState | None:
        return self.states.get(session_id)

    async def save(self, state: SessionState) -> None:
        self.states[state.session_id] = state


class ScratchStoryLog:
    """The recorded session start; no turn counts as settled (every replayed turn runs)."""

    def __init__(self, started: SessionStarted | None) -> None:
        self._started = started

    async def session_started(self, session_id: uuid.UUID) -> SessionStarted | None:
        return self._started

    async def settled(
        self, session_id: uuid.UUID, turn_id: uuid.UUID
    ) -> NarrationCompleted | TurnFailed | None:
        return None

    async def image_requested(self, session_id: uuid.UUID, image_id: uuid.UUID) -> bool:
        return False  # never asked: no replayed turn is settled


class TurnSettings:
    """A `SettingsSource` that answers with the settings chosen for the turn in hand."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings

    async def current(self) -> LiveSettings:
        return self.settings


class ScratchDelivery:
    """A first delivery that nobody acknowledges to (there is no consumer behind it)."""

    attempt = 1
    stream_seq: int | None = None

    def __init__(self) -> None:
        self.delivered_at = time.monotonic()

    async def ack(self) -> None:
        return None

    async def nack(self, delay_s: float) -> None:
        return None

    async def term(self) -> None:
        return None

    async def in_progress(self) -> None:
        return None
