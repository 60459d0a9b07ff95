"""Workers that pull image requests from the durable consumer, one message per idle worker.

Each worker has its own pull subscription and fetches a single message only when it is
free, so a process never holds a message it is not working on: nothing waits in a local
buffer while its ack_wait runs out (FastStream's `max_workers` prefetches; see the field
notes), and a killed process loses at most `concurrency` messages, which JetStream
redelivers to the others after ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from taleforge.contracts import STREAM_NAME, tracing
from taleforge.illustrator.adapters.bus import CONSUMER_NAME

log = logging.getLogger(__name__)

Handle = Callable[[Msg], Awaitable[None]]


class PullWorkers:
    def __init__(
        self,
        js: JetStreamContext,
        handle: Handle,
        *,
        concurrency: int,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        self._js = js
        self._handle = handle
        self.concurrency = concurrency
        self.fetch_timeout_s = fetch_timeout_s
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for i in range(self.concurrency):
            sub = await self._js.pull_subscribe_bind(CONSUMER_NAME, STREAM_NAME)
            self._tasks.append(asyncio.create_task(self._work(sub), name=f"illustrator-{i}"))
        log.info("%d render worker(s) pulling from consumer %s", self.concurrency, CONSUMER_NAME)

    async def stop(self, grace_s: float) -> None:
        """Stop fetching; let renders in progress finish for up to `grace_s`."""
        self._stopping.set()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()  # the message is redelivered after ack_wait
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if pending:
            log.warning(
                "%d render(s) cut short by shutdown; they will be redelivered", len(pending)
            )
        self._tasks.clear()

    async def _work(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                messages = await sub.fetch(1, timeout=self.fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError):
                continue
            except (ConnectionClosedError, ServiceUnavailableError) as exc:
                log.warning("fetch failed (%s); retrying", exc)
                await asyncio.sleep(self.fetch_timeout_s)
                continue
            for msg in messages:
                delivery = msg.metadata.num_delivered or 1
                with tracing.consuming(
                    msg.subject, msg.headers, consumer=CONSUMER_NAME, delivery=delivery
                ):
                    try:
                        await self._handle(msg)
                    except Exception:  # a handler bug must not kill the worker
                        log.exception("render handler crashed on %s", msg.subject)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
