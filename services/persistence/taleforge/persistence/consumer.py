"""The stream consumer: pull batches from the durable consumer, settle each message.

A plain nats-py pull loop rather than a FastStream subscriber: `fetch(batch=N)` returns at
once with whatever is waiting (up to N), so a quiet stream gets each event applied without
delay and a busy one gets full batches. (FastStream's batch subscriber keeps fetching until
the batch is full or its timeout passes, which delays every event on a quiet stream.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from taleforge.contracts import STREAM_NAME, tracing
from taleforge.persistence.delivery import (
    Delivery,
    EventStore,
    RetryPolicy,
    Verdict,
    decide_batch,
)
from taleforge.persistence.ordering import StreamOrder

log = logging.getLogger(__name__)


def as_delivery(raw: Msg) -> Delivery:
    meta = raw.metadata
    return Delivery(
        subject=raw.subject,
        payload=raw.data,
        stream_seq=meta.sequence.stream,
        attempt=meta.num_delivered or 1,
    )


async def settle(raw: Msg, verdict: Verdict) -> None:
    if verdict.action == "ack":
        await raw.ack()
    elif verdict.action == "term":
        await raw.term()
    else:
        await raw.nak(delay=verdict.delay_s)


async def handle_batch(
    store: EventStore, raws: Sequence[Msg], policy: RetryPolicy, order: StreamOrder | None = None
) -> None:
    """Apply `raws` (stream order) and ack, term or nak each one as decided.

    With `order`, earlier events JetStream still holds back are applied first (see
    `ordering`); if one of them fails for now, the whole batch waits (nak).
    """
    deliveries = [as_delivery(raw) for raw in raws]
    held_back = await order.fill_gaps(deliveries) if order is not None else None
    if held_back is None:
        verdicts = await decide_batch(store, deliveries, policy)
    else:
        verdicts = [held_back] * len(raws)
    for raw, verdict in zip(raws, verdicts, strict=True):
        await settle(raw, verdict)
    if order is not None:
        order.settled(deliveries, verdicts)


class EventConsumer:
    """Runs the pull loop on the durable consumer `durable` until `stop`."""

    def __init__(
        self,
        store: EventStore,
        policy: RetryPolicy,
        *,
        durable: str,
        batch_size: int,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        self.store = store
        self.policy = policy
        self.durable = durable
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self._stopping = asyncio.Event()
        self._busy = False  # a fetched batch is being applied
        self._task: asyncio.Task[None] | None = None
        self._order: StreamOrder | None = None

    async def start(self, js: JetStreamContext) -> None:
        self._order = await StreamOrder.resume(js, self.durable, self.store, self.policy)
        sub = await js.pull_subscribe_bind(durable=self.durable, stream=STREAM_NAME)
        self._task = asyncio.create_task(self._run(sub), name=f"consumer {self.durable}")
        log.info(
            "consuming %s as %s, batches of up to %d", STREAM_NAME, self.durable, self.batch_size
        )

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    raws = await sub.fetch(self.batch_size, timeout=self.fetch_timeout_s)
                except TimeoutError:
                    continue  # nothing new
                except Exception as exc:  # NATS reconnecting, consumer briefly missing…
                    log.warning("fetch from %s failed: %s; retrying", self.durable, exc)
                    await asyncio.sleep(self.fetch_timeout_s)
                    continue
                if not raws:
                    continue  # a fetch cut short by shutdown returns nothing
                self._busy = True
                try:
                    received = [(r.subject, r.headers, r.metadata.num_delivered or 1) for r in raws]
                    with tracing.consuming_batch(received, consumer=self.durable):
                        await handle_batch(self.store, raws, self.policy, self._order)
                except Exception:
                    # Never let one batch end the loop (the process would look alive and
                    # consume nothing): what was not settled is redelivered after ack_wait.
                    log.exception("applying a batch from %s failed; carrying on", self.durable)
                finally:
                    self._busy = False
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stop(self, timeout_s: float) -> None:
        """Stop pulling; let a batch being applied finish (up to `timeout_s`), then settle."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        if not self._busy:
            task.cancel()  # waiting in fetch: nothing is lost by cancelling it
        try:
            await asyncio.wait_for(task, timeout_s)
        except (asyncio.CancelledError, TimeoutError):
            pass  # unsettled messages are redelivered after ack_wait; effects are idempotent
