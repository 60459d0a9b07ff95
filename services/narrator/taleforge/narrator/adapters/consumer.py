"""JetStream in and out of the narrator: the consumer's config, start-up checks, fetch loop.

The stream belongs to persistence; we never declare it. FastStream does not update an
existing durable consumer's config (field notes), so we create-or-update it here, and we
fetch with nats-py ourselves: one loop hands messages, in stream order, to the per-session
dispatcher, which FastStream's concurrent subscribers could not guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from taleforge.contracts import EVENTS_PREFIX, STREAM_NAME, events_filter
from taleforge.narrator.dispatch import SessionDispatcher
from taleforge.narrator.settings import Settings

log = logging.getLogger(__name__)

TURN_REQUESTED_FILTER = events_filter(event_type="turn.requested")
SESSION_STARTED_FILTER = events_filter(event_type="session.started")
# Loading a save rewinds the session's state (restore.py), in order with its turns.
SESSION_RESTORED_FILTER = events_filter(event_type="session.restored")
NARRATOR_FILTERS = [SESSION_STARTED_FILTER, TURN_REQUESTED_FILTER, SESSION_RESTORED_FILTER]
# Messages JetStream gave up delivering to us (persistence translates the advisories): not
# story input (a replay skips them), but in order with the session's turns on our consumer.
DELIVERY_EXHAUSTED_FILTER = events_filter(event_type="delivery.exhausted")
CONSUMER_FILTERS = [*NARRATOR_FILTERS, DELIVERY_EXHAUSTED_FILTER]


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.consumer_name,
        # Several filters need nats-server >= 2.10.
        filter_subjects=CONSUMER_FILTERS,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.concurrency,
    )


async def wait_for_stream(js: JetStreamContext, *, max_wait_delay_s: float = 5.0) -> None:
    delay = 0.1
    while True:
        try:
            await js.stream_info(STREAM_NAME)
            return
        except NotFoundError:
            log.info("waiting for stream %s (persistence creates it)", STREAM_NAME)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_wait_delay_s)


async def prepare_jetstream(settings: Settings, js: JetStreamContext) -> None:
    """Wait for the stream, then create or update our consumer."""
    await wait_for_stream(js)
    await js.add_consumer(STREAM_NAME, consumer_config(settings))
    log.info("consumer %s is ready on %s", settings.consumer_name, CONSUMER_FILTERS)


def session_key(subject: str) -> str:
    """story.events.<session>.<type…> → <session>, without parsing the body."""
    rest = subject.removeprefix(f"{EVENTS_PREFIX}.")
    return rest.split(".", 1)[0]


class FetchLoop:
    def __init__(
        self,
        js: JetStreamContext,
        settings: Settings,
        dispatcher: SessionDispatcher[Msg],
        *,
        fetch_timeout_s: float = 5.0,
    ) -> None:
        self._js = js
        self._settings = settings
        self._dispatcher = dispatcher
        self._timeout = fetch_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def start(self) -> None:
        sub = await self._js.pull_subscribe_bind(
            durable=self._settings.consumer_name, stream=STREAM_NAME
        )
        self._running = True
        self._task = asyncio.create_task(self._run(sub))

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while self._running:
            try:
                # Whatever is waiting, up to the concurrency, in one round trip (nats-py
                # returns at once with what the server has, or with the first message to
                # arrive); max_ack_pending bounds what is in hand. One message per round
                # trip held intake to ~12 turns/s with 200 players (benchmarks/load.py).
                messages = await sub.fetch(batch=self._settings.concurrency, timeout=self._timeout)
            except (NatsTimeoutError, TimeoutError, ServiceUnavailableError):
                continue
            except ConnectionClosedError:
                return
            for msg in messages:
                self._dispatcher.submit(session_key(msg.subject), msg)

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
