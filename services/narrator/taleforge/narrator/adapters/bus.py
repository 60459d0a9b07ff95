"""Publishing the narrator's events through the FastStream NATS broker."""

from __future__ import annotations

from faststream.nats import NatsBroker

from taleforge.contracts import STREAM_NAME, Envelope, live_subject, publish_headers


class BrokerBus:
    def __init__(self, broker: NatsBroker, publish_timeout_s: float = 5.0) -> None:
        self._broker = broker
        self._timeout = publish_timeout_s

    async def publish_event(self, event: Envelope) -> None:
        # Awaiting the PubAck: the event is durable only once the stream has it.
        await self._broker.publish(
            event.to_bytes(),
            event.subject(),
            headers=publish_headers(event),
            stream=STREAM_NAME,
            timeout=self._timeout,
        )

    async def publish_live(self, event: Envelope) -> None:
        assert event.turn_id is not None, "live events belong to a turn"
        await self._broker.publish(event.to_bytes(), live_subject(event.session_id, event.turn_id))
