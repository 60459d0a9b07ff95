"""The stream handler: turn a JetStream delivery into a `Delivery`, carry out the verdict."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream.nats.annotations import NatsMessage

from taleforge.persistence.delivery import Delivery, EventStore, RetryPolicy, decide


def make_record_event(
    store: EventStore, policy: RetryPolicy
) -> Callable[[NatsMessage], Awaitable[None]]:
    async def record_event(msg: NatsMessage) -> None:
        raw = msg.raw_message
        meta = raw.metadata
        delivery = Delivery(
            subject=raw.subject,
            payload=raw.data,
            stream_seq=meta.sequence.stream,
            attempt=meta.num_delivered or 1,
        )
        verdict = await decide(store, delivery, policy)
        if verdict.action == "ack":
            await msg.ack()
        elif verdict.action == "term":
            await msg.reject()
        else:
            await msg.nack(delay=verdict.delay_s)

    return record_event
