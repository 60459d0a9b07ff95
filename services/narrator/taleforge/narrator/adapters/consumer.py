"""Start-up checks on JetStream: wait for the STORY stream, create or update our consumer.

The stream belongs to persistence; we never declare it. FastStream does not update an
existing durable consumer's config (field notes), so we do it here before subscribing.
"""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.contracts import STREAM_NAME, events_filter
from taleforge.narrator.settings import Settings

log = logging.getLogger(__name__)

TURN_REQUESTED_FILTER = events_filter(event_type="turn.requested")


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.consumer_name,
        filter_subject=TURN_REQUESTED_FILTER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        # One turn at a time: the skeleton narrates sequentially, keeping a session in order.
        max_ack_pending=1,
    )


async def prepare_jetstream(settings: Settings, *, max_wait_delay_s: float = 5.0) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        delay = 0.1
        while True:
            try:
                await js.stream_info(STREAM_NAME)
                break
            except NotFoundError:
                log.info("waiting for stream %s (persistence creates it)", STREAM_NAME)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_wait_delay_s)
        await js.add_consumer(STREAM_NAME, consumer_config(settings))
        log.info("consumer %s is ready on %s", settings.consumer_name, TURN_REQUESTED_FILTER)
    finally:
        await nc.close()
