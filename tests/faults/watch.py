"""Watching the bus as it happens, so faults can strike *mid*-stream and *mid*-render.

A plain core-NATS subscriber sees every live message (narration deltas, image progress)
and, since JetStream subjects are ordinary subjects too, every event as it is published.
It reconnects for ever (the NATS server is restarted on purpose) and misses what is
published while it is away, so it only times faults; the audit reads the stream itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from taleforge.contracts import EVENTS_PREFIX, LIVE_PREFIX


@dataclass
class BusWatcher:
    delta_at: dict[str, float] = field(default_factory=dict)  # turn id -> last delta seen
    progress_at: dict[str, float] = field(default_factory=dict)  # image id -> last progress
    settled_turns: set[str] = field(default_factory=set)
    settled_images: set[str] = field(default_factory=set)
    _nc: Client | None = None

    async def start(self, nats_url: str) -> None:
        self._nc = await nats.connect(
            nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, name="fault-watcher"
        )
        await self._nc.subscribe(f"{LIVE_PREFIX}.>", cb=self._live)
        await self._nc.subscribe(f"{EVENTS_PREFIX}.>", cb=self._event)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    @staticmethod
    def _load(msg: Msg) -> dict[str, Any]:
        try:
            body = json.loads(msg.data)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _live(self, msg: Msg) -> None:
        body, now = self._load(msg), time.monotonic()
        if body.get("type") == "narration.delta":
            self.delta_at[str(body.get("turn_id"))] = now
        elif body.get("type") == "image.progress":
            self.progress_at[str(body.get("image_id"))] = now

    async def _event(self, msg: Msg) -> None:
        body = self._load(msg)
        kind = body.get("type")
        if kind in ("narration.completed", "turn.failed"):
            self.settled_turns.add(str(body.get("turn_id")))
        elif kind in ("image.completed", "image.failed"):
            self.settled_images.add(str(body.get("image_id")))

    def streaming_turns(self, within_s: float = 0.5) -> list[str]:
        """Turns whose narration is streaming right now (a delta lately, no outcome yet)."""
        now = time.monotonic()
        return [
            turn
            for turn, at in self.delta_at.items()
            if now - at <= within_s and turn not in self.settled_turns
        ]

    def rendering_images(self, within_s: float = 1.0) -> list[str]:
        """Images being rendered right now (progress lately, no outcome yet)."""
        now = time.monotonic()
        return [
            image
            for image, at in self.progress_at.items()
            if now - at <= within_s and image not in self.settled_images
        ]
