"""`delivery.exhausted` in: a turn JetStream gave up delivering to us is failed for the player.

Persistence translates the server's MAX_DELIVERIES advisories into `delivery.exhausted`
stream events; they reach us on our own consumer, in order with the session's turns. One
about our consumer and a turn: fetch the original request by its sequence and hand it to
`Narrator.give_up` (a TurnFailed max_deliveries unless the turn already has an outcome).
Anything else (another service's consumer) is acknowledged and ignored.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    DeliveryExhausted,
    InvalidEvent,
    TurnRequested,
    parse_event,
)
from taleforge.narrator.narration import Narrator

log = logging.getLogger(__name__)


class ExhaustedTurns:
    def __init__(self, js: JetStreamContext, consumer: str, narrator: Narrator) -> None:
        self._js = js
        self._consumer = consumer
        self._narrator = narrator

    async def handle(self, event: DeliveryExhausted) -> None:
        if event.consumer != self._consumer or event.request_type != TurnRequested.TYPE:
            return
        try:
            original = await self._js.get_msg(STREAM_NAME, event.request_seq)
        except NotFoundError:
            log.error("turn message %d ran out of deliveries and is gone", event.request_seq)
            return
        try:
            turn = parse_event(original.data or b"")
        except InvalidEvent:
            return  # malformed messages are terminated, never failed for a player
        if isinstance(turn, TurnRequested) and await self._narrator.give_up(
            turn, event.request_seq, event.deliveries
        ):
            log.warning("turn %s failed: out of deliveries", turn.turn_id)
