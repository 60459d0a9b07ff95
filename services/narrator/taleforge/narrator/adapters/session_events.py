"""One session's events from the STORY stream, in order, up to a stream sequence."""

from __future__ import annotations

import contextlib
import logging
import uuid

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from taleforge.contracts import STREAM_NAME, Envelope, InvalidEvent, events_filter, parse_event

log = logging.getLogger(__name__)

BATCH = 256
FETCH_TIMEOUT_S = 2.0


class JetStreamSessionEvents:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def read(self, session_id: uuid.UUID, *, through_seq: int | None) -> list[Envelope]:
        """Every valid event of the session with a sequence up to `through_seq` (all: None).

        An ephemeral consumer on the session's subjects, removed afterwards; malformed
        messages are skipped (persistence dead-letters them).
        """
        consumer = await self._js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                filter_subject=events_filter(session_id),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        sub = await self._js.pull_subscribe_bind(consumer=consumer.name, stream=STREAM_NAME)
        events: list[Envelope] = []
        try:
            while True:
                try:
                    messages = await sub.fetch(BATCH, timeout=FETCH_TIMEOUT_S)
                except (NatsTimeoutError, TimeoutError):
                    return events  # nothing (more) on the session's subjects
                for msg in messages:
                    meta = msg.metadata
                    if through_seq is not None and meta.sequence.stream > through_seq:
                        return events
                    try:
                        events.append(parse_event(msg.data))
                    except InvalidEvent as exc:
                        log.warning("skipping malformed event on %s: %s", msg.subject, exc.reason)
                    if meta.num_pending == 0 or meta.sequence.stream == through_seq:
                        return events
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(STREAM_NAME, consumer.name)
