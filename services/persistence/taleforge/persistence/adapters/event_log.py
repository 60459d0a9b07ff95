"""The STORY stream: the event log every service reads and the source of truth.

The persistence service is its only owner: it creates or updates the stream at start-up.
Every other service only binds to it (field notes: a stream declared by several services is
rewritten by whichever starts last).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from taleforge.contracts import STREAM_NAME, STREAM_SUBJECTS

log = logging.getLogger(__name__)


def story_stream_config(
    *,
    max_age_s: float = 30 * 24 * 3600,
    max_bytes: int = -1,
    duplicate_window_s: float = 120.0,
    replicas: int = 1,
) -> StreamConfig:
    # Limits retention keeps events after they are consumed: replay and rebuild need them.
    return StreamConfig(
        name=STREAM_NAME,
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=max_bytes,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig | None = None) -> None:
    """Create the STORY stream, or bring an existing one to `config`. Idempotent."""
    wanted = config or story_stream_config()
    try:
        await js.stream_info(STREAM_NAME)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", STREAM_NAME)
        return
    await js.update_stream(wanted)
    log.info("stream %s is up to date", STREAM_NAME)


def persistence_consumer_config(
    *,
    durable_name: str = "persistence",
    ack_wait_s: float = 30.0,
    max_deliver: int = 1000,
    max_ack_pending: int = 1,
) -> ConsumerConfig:
    # At most one batch in flight (max_ack_pending = the batch size, one subscriber): events
    # apply strictly in stream order (a turn's seq, and a status never moving backwards,
    # depend on it), including while a batch is being retried.
    return ConsumerConfig(
        durable_name=durable_name,
        filter_subject=STREAM_SUBJECTS[0],  # story.events.>
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, config: ConsumerConfig) -> None:
    """Create the durable consumer or update it to `config` (FastStream would keep an old one)."""
    await js.add_consumer(STREAM_NAME, config=config)
    log.info("consumer %s on %s is up to date", config.durable_name, STREAM_NAME)
