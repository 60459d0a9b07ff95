"""Bus message in, narration out: the thin edge between FastStream and the Narrator."""

from __future__ import annotations

import logging

from faststream.nats.message import NatsMessage

from taleforge.contracts import InvalidEvent, TurnRequested, parse_event
from taleforge.narrator.narration import Narrator

log = logging.getLogger(__name__)


class NatsDelivery:
    """A JetStream message seen as a `Delivery`."""

    def __init__(self, msg: NatsMessage) -> None:
        self._msg = msg
        self.attempt = int(msg.raw_message.metadata.num_delivered or 1)

    async def ack(self) -> None:
        await self._msg.ack()

    async def nack(self, delay_s: float) -> None:
        await self._msg.nack(delay=delay_s)

    async def term(self) -> None:
        await self._msg.reject()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


async def narrate_turn(msg: NatsMessage, narrator: Narrator) -> None:
    delivery = NatsDelivery(msg)
    try:
        event = parse_event(msg.body)
        if not isinstance(event, TurnRequested):
            raise InvalidEvent(f"expected turn.requested, got {event.type}", event_type=event.type)
    except InvalidEvent as exc:
        log.error("terminating malformed message on %s: %s", msg.raw_message.subject, exc.reason)
        await delivery.term()
        return
    try:
        await narrator.handle(event, delivery)
    except Exception:
        # Publishing the outcome failed (the bus itself is in trouble): let JetStream retry.
        log.exception("could not settle turn %s; it will be redelivered", event.turn_id)
        await delivery.nack(1.0)
