"""Start-up work done before the consumer runs: migrate the database, declare the event log.

Both servers may still be starting (compose, `make dev`), so each step is retried with
backoff until `startup_timeout_s`, logging what it waits for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats
from nats.aio.client import Client

from taleforge.persistence.adapters.event_log import (
    ensure_consumer,
    ensure_stream,
    persistence_consumer_config,
    story_stream_config,
)
from taleforge.persistence.adapters.repository import is_transient
from taleforge.persistence.migrations import upgrade_to_head_async
from taleforge.persistence.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retry(what: str, step: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return await step()
        except Exception as exc:
            waitable = is_transient(exc) or isinstance(exc, nats.errors.Error)
            if not waitable or time.monotonic() + delay > deadline:
                raise
            log.warning("waiting for %s: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def declare_event_log(settings: Settings) -> None:
    """Create or update the STORY stream and this service's durable consumer."""

    async def connect() -> Client:
        return await nats.connect(
            settings.nats_url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0
        )

    nc = await retry(
        f"NATS at {settings.nats_url}", connect, settings.persistence_startup_timeout_s
    )
    try:
        js = nc.jetstream()
        await ensure_stream(
            js,
            story_stream_config(
                max_age_s=settings.stream_max_age_s,
                max_bytes=settings.stream_max_bytes,
                duplicate_window_s=settings.stream_duplicate_window_s,
                replicas=settings.stream_replicas,
            ),
        )
        await ensure_consumer(
            js,
            persistence_consumer_config(
                durable_name=settings.persistence_consumer,
                ack_wait_s=settings.persistence_ack_wait_s,
                max_deliver=settings.persistence_max_deliver,
                max_ack_pending=settings.persistence_batch_size,
            ),
        )
    finally:
        await nc.close()


async def migrate_database(settings: Settings) -> None:
    await retry(
        "Postgres",
        lambda: upgrade_to_head_async(settings.database_url),
        settings.persistence_startup_timeout_s,
    )
    log.info("database is at the newest migration")
