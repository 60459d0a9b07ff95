"""JetStream set-up the illustrator owns: wait for the STORY stream, own its durable consumer."""

from __future__ import annotations

import asyncio
import logging
import uuid

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    DeliveryExhausted,
    ImageRequested,
    InvalidEvent,
    SessionStarted,
    event_subject,
    events_filter,
    parse_event,
)
from taleforge.illustrator.likeness import DescribeCharacter, normalise

log = logging.getLogger(__name__)

CONSUMER_NAME = "illustrator"
REQUEST_FILTER = events_filter(event_type=ImageRequested.TYPE)
# Requests JetStream gave up delivering to us (persistence translates the advisories).
EXHAUSTED_FILTER = events_filter(event_type=DeliveryExhausted.TYPE)


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
        filter_subjects=[REQUEST_FILTER, EXHAUSTED_FILTER],  # nats-server >= 2.10
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


def character_descriptions(js: JetStreamContext) -> DescribeCharacter:
    """Character descriptions from the session's `session.started` scenario snapshot."""

    async def describe(session_id: uuid.UUID, name: str) -> str:
        subject = event_subject(session_id, SessionStarted.TYPE)
        try:
            raw = await js.get_last_msg(STREAM_NAME, subject)
            event = parse_event(raw.data or b"")
        except (NotFoundError, InvalidEvent) as exc:
            log.info("no scenario for session %s (%s): %r drawn by name", session_id, exc, name)
            return ""
        scenario = getattr(event, "scenario", None)
        if scenario is None:
            return ""
        cast = [*scenario.characters, scenario.player_character]
        wanted = normalise(name)
        return next((c.description for c in cast if c and normalise(c.name) == wanted), "")

    return describe
