"""What to do with delivered stream messages: apply them, dead-letter them, or retry them.

Kept apart from NATS so the decision is plain code: `decide` (one message) and
`decide_batch` (several, in stream order) return `Verdict`s and the pull loop (`consumer`)
carries them out on the messages. The rebuild uses the same functions, so a replay
projects exactly as the live service does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from taleforge.contracts import InvalidEvent, StoryEvent, parse_event
from taleforge.persistence.adapters.repository import is_transient
from taleforge.persistence.projection import EventRejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    subject: str
    payload: bytes
    stream_seq: int | None
    attempt: int  # JetStream's delivery count, 1 on the first delivery


@dataclass(frozen=True)
class Verdict:
    action: Literal["ack", "term", "nak"]
    delay_s: float = 0.0


ACK = Verdict("ack")
TERM = Verdict("term")


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    unexpected_error_attempts: int = 3

    def backoff(self, attempt: int) -> Verdict:
        return Verdict("nak", min(self.base_s * 2 ** max(attempt - 1, 0), self.max_s))


class EventStore(Protocol):
    async def apply_event(self, event: StoryEvent, stream_seq: int | None = None) -> bool: ...

    async def apply_batch(self, events: Sequence[tuple[StoryEvent, int | None]]) -> list[bool]: ...

    async def record_dead_letter(
        self,
        *,
        stream_seq: int | None,
        subject: str,
        payload: bytes,
        reason: str,
        delivery_count: int,
    ) -> None: ...


async def decide(store: EventStore, delivery: Delivery, policy: RetryPolicy) -> Verdict:
    try:
        event = parse_event(delivery.payload)
    except InvalidEvent as exc:
        return await _dead_letter(store, delivery, f"invalid event: {exc.reason}", policy)
    try:
        applied = await store.apply_event(event, delivery.stream_seq)
    except EventRejected as exc:
        return await _dead_letter(store, delivery, exc.reason, policy)
    except Exception as exc:
        if is_transient(exc):
            log.warning(
                "database unavailable applying seq %s (attempt %d): %s; will retry",
                delivery.stream_seq,
                delivery.attempt,
                exc,
            )
            return policy.backoff(delivery.attempt)
        if delivery.attempt < policy.unexpected_error_attempts:
            log.exception("unexpected error applying seq %s; will retry", delivery.stream_seq)
            return policy.backoff(delivery.attempt)
        log.exception("unexpected error applying seq %s; giving up", delivery.stream_seq)
        reason = f"gave up after {delivery.attempt} deliveries: {type(exc).__name__}: {exc}"
        return await _dead_letter(store, delivery, reason, policy)
    if applied:
        log.debug("applied %s %s (seq %s)", event.type, event.event_id, delivery.stream_seq)
    else:
        log.info("%s %s already applied (seq %s)", event.type, event.event_id, delivery.stream_seq)
    return ACK


async def decide_batch(
    store: EventStore, deliveries: Sequence[Delivery], policy: RetryPolicy
) -> list[Verdict]:
    """Verdicts for `deliveries` (stream order), applied in one transaction when all is well.

    When any of them is malformed or the batch fails, the batch is rolled back and applied
    one by one, so a single poison event is dead-lettered and the others still apply.
    """
    if len(deliveries) == 1:
        return [await decide(store, deliveries[0], policy)]
    try:
        events = [parse_event(delivery.payload) for delivery in deliveries]
    except InvalidEvent:
        return await _one_by_one(store, deliveries, policy)
    try:
        applied = await store.apply_batch(
            [
                (event, delivery.stream_seq)
                for event, delivery in zip(events, deliveries, strict=True)
            ]
        )
    except Exception as exc:
        log.info(
            "batch of %d (seq %s..%s) failed (%s); applying one by one",
            len(deliveries),
            deliveries[0].stream_seq,
            deliveries[-1].stream_seq,
            type(exc).__name__,
        )
        return await _one_by_one(store, deliveries, policy)
    log.debug(
        "applied %d of %d events (seq %s..%s)",
        sum(applied),
        len(applied),
        deliveries[0].stream_seq,
        deliveries[-1].stream_seq,
    )
    return [ACK] * len(deliveries)


async def _one_by_one(
    store: EventStore, deliveries: Sequence[Delivery], policy: RetryPolicy
) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for index, delivery in enumerate(deliveries):
        verdict = await decide(store, delivery, policy)
        verdicts.append(verdict)
        if verdict.action == "nak":
            # The rest wait for this one, untried, so they are retried after it, in order.
            verdicts += [verdict] * (len(deliveries) - index - 1)
            break
    return verdicts


async def _dead_letter(
    store: EventStore, delivery: Delivery, reason: str, policy: RetryPolicy
) -> Verdict:
    log.error("dead letter: seq %s on %s: %s", delivery.stream_seq, delivery.subject, reason)
    try:
        await store.record_dead_letter(
            stream_seq=delivery.stream_seq,
            subject=delivery.subject,
            payload=delivery.payload,
            reason=reason,
            delivery_count=delivery.attempt,
        )
    except Exception as exc:
        # Terminating without the record would lose the message silently: retry instead.
        log.warning("could not record dead letter seq %s: %s; will retry", delivery.stream_seq, exc)
        return policy.backoff(delivery.attempt)
    return TERM
