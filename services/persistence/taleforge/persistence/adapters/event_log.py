"""The STORY stream: the event log every service reads and the source of truth.

The persistence service is its only owner: it creates or updates the stream at start-up.
Every other service only binds to it (field notes: a stream declared by several services is
rewritten by whichever starts last). It declares the LIVE stream next to it, for the same
reason: a short-lived, in-memory capture of the live channel that the API replays from.
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

from taleforge.contracts import (
    LIVE_STREAM_NAME,
    LIVE_STREAM_SUBJECTS,
    STREAM_NAME,
    STREAM_SUBJECTS,
)
from taleforge.contracts.subjects import ADVISORY_STREAM_NAME, max_deliveries_subject

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


def live_stream_config(
    *, max_age_s: float = 3600, max_bytes: int = 256 * 1024 * 1024, replicas: int = 1
) -> StreamConfig:
    # A short age: deltas matter only while a client may still reconnect to its turn; the
    # narration itself is in STORY (NarrationCompleted). File storage, because a memory
    # stream is gone after a NATS server restart, and the API follows turns through it.
    return StreamConfig(
        name=LIVE_STREAM_NAME,
        subjects=list(LIVE_STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=max_bytes,
        num_replicas=replicas,
    )


def advisory_stream_config(*, max_age_s: float = 7 * 24 * 3600, replicas: int = 1) -> StreamConfig:
    # The server's MAX_DELIVERIES advisories for STORY's consumers, kept (core NATS keeps
    # nothing) until our translator (adapters/advisories.py) turns each into a
    # delivery.exhausted event, which the narrator and the illustrator answer with the
    # failure the player sees, even when they were down when the server published it.
    return StreamConfig(
        name=ADVISORY_STREAM_NAME,
        subjects=[max_deliveries_subject()],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=64 * 1024 * 1024,
        num_replicas=replicas,
    )


async def ensure_stream(
    js: JetStreamContext,
    config: StreamConfig | None = None,
    live_config: StreamConfig | None = None,
) -> None:
    """Create the STORY stream (and LIVE and ADVISORIES next to it), or bring existing ones
    to their configs. Idempotent. LIVE and ADVISORIES have STORY's replica count unless
    `live_config` says otherwise."""
    wanted = config or story_stream_config()
    replicas = wanted.num_replicas or 1
    live = live_config or live_stream_config(replicas=replicas)
    advisories = advisory_stream_config(replicas=replicas)
    for name, stream in (
        (STREAM_NAME, wanted),
        (LIVE_STREAM_NAME, live),
        (ADVISORY_STREAM_NAME, advisories),
    ):
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(stream)
            log.info("created stream %s", name)
            continue
        await js.update_stream(stream)
        log.info("stream %s is up to date", name)


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
