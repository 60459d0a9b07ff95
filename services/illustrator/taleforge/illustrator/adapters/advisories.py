"""Messages JetStream gave up on: MAX_DELIVERIES advisories in, failure events out.

When an image request runs out of deliveries without the illustrator ever publishing its
outcome (killed on its last delivery, a long outage), the server publishes an advisory on
core NATS. Persistence captures those in the ADVISORIES stream, so none is lost while we
are down; this durable consumer reads the ones about our consumer, fetches the original
message from STORY by its sequence and hands it to `on_exhausted` (which fails the image).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError, ServiceUnavailableError

from taleforge.contracts import STREAM_NAME
from taleforge.contracts.subjects import ADVISORY_STREAM_NAME, max_deliveries_subject

log = logging.getLogger(__name__)

# (the original stream message, how many deliveries it had)
OnExhausted = Callable[[RawStreamMsg, int], Awaitable[None]]


def advisory_consumer_config(consumer: str, *, ack_wait_s: float = 30.0) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=f"{consumer}-advisories",
        filter_subject=max_deliveries_subject(consumer),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=50,
    )


class AdvisoryLoop:
    def __init__(
        self,
        js: JetStreamContext,
        consumer: str,
        on_exhausted: OnExhausted,
        *,
        fetch_timeout_s: float = 5.0,
        retry_delay_s: float = 5.0,
    ) -> None:
        self._js = js
        self._config = advisory_consumer_config(consumer)
        self._on_exhausted = on_exhausted
        self._fetch_timeout_s = fetch_timeout_s
        self._retry_delay_s = retry_delay_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._config.durable_name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _bind(self) -> JetStreamContext.PullSubscription:
        delay = 0.1
        while True:
            try:
                await self._js.add_consumer(ADVISORY_STREAM_NAME, self._config)
                return await self._js.pull_subscribe_bind(
                    durable=self._config.durable_name or "", stream=ADVISORY_STREAM_NAME
                )
            except NotFoundError:  # persistence declares the stream; it may not be up yet
                log.info("waiting for stream %s (persistence creates it)", ADVISORY_STREAM_NAME)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _run(self) -> None:
        sub = await self._bind()
        while True:
            try:
                messages = await sub.fetch(batch=10, timeout=self._fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError, ServiceUnavailableError):
                continue
            except ConnectionClosedError:
                return
            for msg in messages:
                try:
                    await self._handle(msg.data)
                except Exception:
                    log.exception("could not handle advisory %s; will retry", msg.subject)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self._retry_delay_s)
                    continue
                with contextlib.suppress(Exception):
                    await msg.ack()

    async def _handle(self, data: bytes) -> None:
        try:
            advisory = json.loads(data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries") or 0)
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a malformed MAX_DELIVERIES advisory: %r", data[:200])
            return
        try:
            original = await self._js.get_msg(STREAM_NAME, seq)
        except NotFoundError:
            log.error("message %d ran out of deliveries and is gone from %s", seq, STREAM_NAME)
            return
        log.warning("stream message %d ran out of deliveries (%d)", seq, deliveries)
        await self._on_exhausted(original, deliveries)
