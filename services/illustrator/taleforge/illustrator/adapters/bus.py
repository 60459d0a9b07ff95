"""JetStream set-up the illustrator owns: wait for the STORY stream, own its durable consumer."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.contracts import STREAM_NAME, ImageRequested, events_filter

log = logging.getLogger(__name__)

CONSUMER_NAME = "illustrator"
REQUEST_FILTER = events_filter(event_type=ImageRequested.TYPE)


async def wait_for_stream(js: JetStreamContext, *, max_delay_s: float = 5.0) -> None:
    """Block until persistence has declared the STORY stream (we never declare it)."""
    delay = 0.2
    while True:
        try:
            await js.stream_info(STREAM_NAME)
            return
        except NotFoundError:
            log.info("waiting for stream %s to exist (retry in %.1fs)", STREAM_NAME, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


async def ensure_consumer(
    js: JetStreamContext, *, ack_wait_s: float, max_deliver: int, max_ack_pending: int
) -> None:
    """Create or update the durable consumer; FastStream would keep a stale config."""
    config = ConsumerConfig(
        durable_name=CONSUMER_NAME,
        filter_subject=REQUEST_FILTER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    await js.add_consumer(STREAM_NAME, config)
    log.info(
        "consumer %s ready (ack_wait %.0fs, max_deliver %d, max_ack_pending %d)",
        CONSUMER_NAME,
        ack_wait_s,
        max_deliver,
        max_ack_pending,
    )
