"""The stream handler: turn a batch of JetStream deliveries into `Delivery`s and carry out
each one's verdict (ack, term or nak with a delay) on its message, in stream order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from faststream import Context
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg

from taleforge.persistence.delivery import (
    Delivery,
    EventStore,
    RetryPolicy,
    Verdict,
    decide_batch,
)

BatchMessage = Annotated[NatsBatchMessage, Context("message")]


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


def make_record_events(
    store: EventStore, policy: RetryPolicy
) -> Callable[[NatsBatchMessage], Awaitable[None]]:
    async def record_events(msg: BatchMessage) -> None:
        raws = list(msg.raw_message)
        verdicts = await decide_batch(store, [as_delivery(raw) for raw in raws], policy)
        for raw, verdict in zip(raws, verdicts, strict=True):
            await settle(raw, verdict)

    return record_events
