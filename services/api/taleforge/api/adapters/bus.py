"""The API's side of NATS: publish contract events to JetStream, read image bytes.

A publish returns only once JetStream has acknowledged it (the event is durable then); the
`Nats-Msg-Id` header makes a retried publish land once.
"""

from __future__ import annotations

import asyncio
import logging

from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from taleforge.contracts import STREAM_NAME, Envelope, tracing

log = logging.getLogger(__name__)


class BusUnavailable(Exception):
    """NATS or the STORY stream did not take the event (or the object could not be read)."""


class ObjectMissing(Exception):
    """The object store has no such object."""


class EventBus:
    def __init__(self, broker: NatsBroker, *, publish_timeout_s: float = 5.0) -> None:
        self.broker = broker
        self.publish_timeout_s = publish_timeout_s

    @property
    def connected(self) -> bool:
        try:
            return bool(self.broker.connection.is_connected)
        except Exception:  # not connected yet: FastStream raises on an empty connection state
            return False

    @property
    def js(self) -> JetStreamContext:
        """JetStream on the broker's connection (readers: streams, consumers, KV)."""
        try:
            return self.broker.connection.jetstream()
        except Exception as exc:  # FastStream raises on a connection not made yet
            raise BusUnavailable(f"NATS is not connected: {exc!r}") from exc

    async def publish(self, event: Envelope) -> int:
        """Put `event` on the STORY stream and wait for the PubAck; its stream sequence
        (the original's, for a duplicate)."""
        try:
            ack = await self.broker.publish(
                event.to_bytes(),
                event.subject(),
                # Msg-Id, and the ids the consumers' logs name (FastStream adds traceparent).
                headers=tracing.message_headers(event),
                stream=STREAM_NAME,
                timeout=self.publish_timeout_s,
            )
        except (NatsError, TimeoutError, OSError) as exc:
            raise BusUnavailable(f"could not publish {event.type}: {exc!r}") from exc
        log.info(
            "published %s event_id=%s seq=%s duplicate=%s",
            event.type,
            event.event_id,
            ack.seq,
            ack.duplicate,
        )
        return int(ack.seq)

    async def stream_exists(self) -> bool:
        try:
            await self.broker.connection.jetstream().stream_info(STREAM_NAME)
        except NotFoundError:
            return False
        return True

    async def wait_for_stream(self, timeout_s: float) -> bool:
        """Wait (with backoff) for persistence to declare the stream; never declare it here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.1
        while True:
            try:
                if await self.stream_exists():
                    return True
            except (NatsError, TimeoutError) as exc:
                log.info("cannot ask for stream %s yet: %r", STREAM_NAME, exc)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            log.info("waiting for stream %s (declared by persistence)", STREAM_NAME)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)

    async def read_object(self, bucket: str, name: str) -> bytes:
        try:
            store = await self.broker.object_storage(bucket, declare=False)
            result = await store.get(name)
        except ObjectNotFoundError as exc:
            raise ObjectMissing(f"{bucket}/{name}") from exc
        except NotFoundError as exc:  # the bucket itself is missing
            raise ObjectMissing(f"{bucket}/{name}") from exc
        except (NatsError, TimeoutError, OSError) as exc:
            raise BusUnavailable(f"could not read {bucket}/{name}: {exc!r}") from exc
        return result.data or b""
