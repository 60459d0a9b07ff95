"""Messages JetStream gave up on: MAX_DELIVERIES advisories in, `delivery.exhausted` out.

When a consumer of STORY runs out of deliveries for a message (its service killed on the
last delivery, a long outage), the server publishes an advisory on core NATS; the
ADVISORIES stream (declared next to STORY, event_log.py) keeps it while nobody listens.
This one durable consumer reads them all, fetches the original message from STORY by its
sequence and publishes a `delivery.exhausted` stream event about it, with an id derived from
(sequence, consumer) so a redelivered advisory is deduplicated. The owning service (the
narrator for turns, the illustrator for images) sees that event on its own consumer and
fails the request for the player unless it already has an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from taleforge.contracts import (
    STREAM_NAME,
    AdminEvent,
    DeliveryExhausted,
    ImageRequested,
    InvalidEvent,
    parse_event,
    publish_headers,
)
from taleforge.contracts.subjects import ADVISORY_STREAM_NAME, max_deliveries_subject

log = logging.getLogger(__name__)

DURABLE_NAME = "persistence-advisories"
# Namespace of delivery.exhausted ids: uuid5(namespace, "<request_seq>:<consumer>").
EXHAUSTED_NAMESPACE = uuid.UUID("5b0d7c1e-2f0e-4c55-9a43-3f1c1e0a7d21")


def exhausted_event_id(request_seq: int, consumer: str) -> uuid.UUID:
    return uuid.uuid5(EXHAUSTED_NAMESPACE, f"{request_seq}:{consumer}")


def advisory_consumer_config(*, ack_wait_s: float = 30.0) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DURABLE_NAME,
        filter_subject=max_deliveries_subject(),  # every consumer of STORY
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=50,
    )


def exhausted_event(advisory: bytes, original: bytes, seq: int) -> DeliveryExhausted | None:
    """The stream event for one advisory about the message `original` at `seq`; None when
    there is nothing a service could fail (malformed, an admin event, itself an exhaustion).
    Raises ValueError/KeyError/TypeError on a malformed advisory."""
    fields = json.loads(advisory)
    consumer = str(fields["consumer"])
    deliveries = int(fields.get("deliveries") or 0)
    try:
        request = parse_event(original)
    except InvalidEvent as exc:  # malformed messages are terminated, never failed for a player
        log.error("message %d ran out of deliveries and is malformed: %s", seq, exc.reason)
        return None
    if isinstance(request, AdminEvent | DeliveryExhausted):
        log.error("%s %d ran out of deliveries on %s", request.type, seq, consumer)
        return None
    return DeliveryExhausted(
        event_id=exhausted_event_id(seq, consumer),
        session_id=request.session_id,
        user_id=request.user_id,
        turn_id=request.turn_id,
        consumer=consumer,
        request_seq=seq,
        request_type=request.type,
        deliveries=deliveries,
        image_id=request.image_id if isinstance(request, ImageRequested) else None,
    )


async def translate(js: JetStreamContext, advisory: bytes) -> DeliveryExhausted | None:
    """Publish the `delivery.exhausted` for one MAX_DELIVERIES advisory (PubAck awaited)."""
    try:
        seq = int(json.loads(advisory)["stream_seq"])
    except (ValueError, KeyError, TypeError):
        log.error("ignoring a malformed MAX_DELIVERIES advisory: %r", advisory[:200])
        return None
    try:
        original = await js.get_msg(STREAM_NAME, seq)
    except NotFoundError:
        log.error("message %d ran out of deliveries and is gone from %s", seq, STREAM_NAME)
        return None
    try:
        event = exhausted_event(advisory, original.data or b"", seq)
    except (ValueError, KeyError, TypeError):
        log.error("ignoring a malformed MAX_DELIVERIES advisory: %r", advisory[:200])
        return None
    if event is None:
        return None
    await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))
    log.warning(
        "%s %d ran out of deliveries on %s (%d)",
        event.request_type,
        seq,
        event.consumer,
        event.deliveries,
    )
    return event


class AdvisoryTranslator:
    """The one loop that reads ADVISORIES: started and stopped with persistence's consumer."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        fetch_timeout_s: float = 5.0,
        retry_delay_s: float = 5.0,
    ) -> None:
        self._js = js
        self._config = advisory_consumer_config()
        self._fetch_timeout_s = fetch_timeout_s
        self._retry_delay_s = retry_delay_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._js.add_consumer(ADVISORY_STREAM_NAME, self._config)
        sub = await self._js.pull_subscribe_bind(durable=DURABLE_NAME, stream=ADVISORY_STREAM_NAME)
        self._task = asyncio.create_task(self._run(sub), name=DURABLE_NAME)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await sub.fetch(batch=10, timeout=self._fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError, ServiceUnavailableError):
                continue
            except ConnectionClosedError:
                return
            for msg in messages:
                try:
                    await translate(self._js, msg.data)
                except Exception:
                    log.exception("could not translate advisory %s; will retry", msg.subject)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self._retry_delay_s)
                    continue
                with contextlib.suppress(Exception):
                    await msg.ack()
