"""Bus message in, decision out: the thin edge between JetStream and the Narrator."""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from taleforge.contracts import (
    DeliveryExhausted,
    InvalidEvent,
    SessionRestored,
    SessionStarted,
    TurnRequested,
    parse_event,
)
from taleforge.narrator.adapters.exhausted import ExhaustedTurns
from taleforge.narrator.narration import Narrator
from taleforge.narrator.restore import Restorer

log = logging.getLogger(__name__)


class JetStreamDelivery:
    """A JetStream message seen as a `Delivery`."""

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        metadata = msg.metadata
        self.attempt = int(metadata.num_delivered or 1)
        self.stream_seq: int | None = metadata.sequence.stream if metadata.sequence else None
        self.delivered_at = time.monotonic()

    async def ack(self) -> None:
        await self._msg.ack()

    async def nack(self, delay_s: float) -> None:
        await self._msg.nak(delay=delay_s)

    async def term(self) -> None:
        await self._msg.term()

    async def in_progress(self) -> None:
        await self._msg.in_progress()


async def handle_message(
    msg: Msg, narrator: Narrator, restorer: Restorer, exhausted: ExhaustedTurns
) -> None:
    delivery = JetStreamDelivery(msg)
    try:
        event = parse_event(msg.data)
        if not isinstance(
            event, TurnRequested | SessionStarted | SessionRestored | DeliveryExhausted
        ):
            raise InvalidEvent(f"unexpected {event.type} on {msg.subject}", event_type=event.type)
    except InvalidEvent as exc:
        log.error("terminating malformed message on %s: %s", msg.subject, exc.reason)
        await delivery.term()
        return
    try:
        if isinstance(event, SessionRestored):
            await restorer.restore(event, delivery)
        elif isinstance(event, DeliveryExhausted):
            await exhausted.handle(event)
            await delivery.ack()
        else:
            await narrator.handle(event, delivery)
    except Exception:
        # Publishing or saving failed (the bus itself is in trouble): let JetStream retry.
        log.exception("could not settle %s %s; it will be redelivered", event.type, event.event_id)
        await delivery.nack(1.0)
