"""Publishing the narrator's events with nats-py: stream events await their PubAck."""

from __future__ import annotations

from nats.aio.client import Client
from nats.js import JetStreamContext

from taleforge.contracts import STREAM_NAME, Envelope, live_subject, tracing


class NatsBus:
    def __init__(self, nc: Client, js: JetStreamContext, publish_timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._js = js
        self._timeout = publish_timeout_s

    async def publish_event(self, event: Envelope) -> None:
        # Awaiting the PubAck: the event is durable only once the stream has it.
        with tracing.publishing(event) as headers:
            await self._js.publish(
                event.subject(),
                event.to_bytes(),
                headers=headers,
                stream=STREAM_NAME,
                timeout=self._timeout,
            )

    async def publish_live(self, event: Envelope) -> None:
        assert event.turn_id is not None, "live events belong to a turn"
        await self._nc.publish(live_subject(event.session_id, event.turn_id), event.to_bytes())
