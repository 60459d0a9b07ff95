"""Turns this process accepted but persistence may not have recorded yet.

Between the 202 and the projection of the turn row there are a few milliseconds in which
`GET /api/turns/{id}` would say 404 to the very client that was just told to poll it. This
short-lived, bounded memory lets it say "pending" instead. Per process: with several API
replicas a poll that lands elsewhere in that window still sees 404 briefly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from uuid import UUID

from taleforge.contracts import TurnRequested


class AcceptedTurns:
    def __init__(self, *, ttl_s: float = 120.0, max_items: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_items = max_items
        self._turns: OrderedDict[UUID, tuple[float, TurnRequested]] = OrderedDict()

    def remember(self, event: TurnRequested) -> None:
        self._turns[event.turn_id] = (time.monotonic() + self._ttl_s, event)
        self._turns.move_to_end(event.turn_id)
        while len(self._turns) > self._max_items:
            self._turns.popitem(last=False)

    def get(self, turn_id: UUID, user_id: UUID) -> TurnRequested | None:
        entry = self._turns.get(turn_id)
        if entry is None:
            return None
        expires, event = entry
        if time.monotonic() > expires:
            del self._turns[turn_id]
            return None
        return event if event.user_id == user_id else None
