"""Applying the stream in order even when JetStream hands an earlier message back late.

The consumer settles each batch before it fetches the next, but JetStream redelivers an
unsettled message only when its ack_wait runs out (or its nak delay ends), and meanwhile
delivers newer messages: the batch a killed predecessor held, a batch naked while Postgres
was away, messages a fetch lost in a NATS restart. Applied as they came, a turn's
narration would come before the turn itself, be rejected as about an unknown turn and
dead-lettered, and the turn would stay pending for ever.

`StreamOrder` remembers the first stream sequence not yet settled in order. When a batch
reaches beyond it with earlier messages missing, those are read from the stream and
applied first, one by one. Applying is idempotent, so when JetStream hands them back later
they are "already applied" (or dead-lettered again under the same stream sequence) and
acknowledged. The persistence consumer's filter is the whole stream, so every sequence
in a gap is one of its messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import STREAM_NAME
from taleforge.persistence.delivery import Delivery, EventStore, RetryPolicy, Verdict, decide

log = logging.getLogger(__name__)


class StreamOrder:
    def __init__(
        self, js: JetStreamContext, store: EventStore, policy: RetryPolicy, next_seq: int
    ) -> None:
        self.js = js
        self.store = store
        self.policy = policy
        self.next_seq = next_seq  # the first stream sequence not settled in order yet
        self._attempts: Counter[int] = Counter()  # tries of gap events read from the stream

    @classmethod
    async def resume(
        cls, js: JetStreamContext, durable: str, store: EventStore, policy: RetryPolicy
    ) -> StreamOrder:
        """Start after what the durable consumer has acknowledged in order (its ack floor)."""
        info = await js.consumer_info(STREAM_NAME, durable)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        first = (await js.stream_info(STREAM_NAME)).state.first_seq
        return cls(js, store, policy, max(floor + 1, first))

    async def fill_gaps(self, deliveries: Sequence[Delivery]) -> Verdict | None:
        """Apply the events missing before and between `deliveries`, in stream order.

        Returns None when the batch may be applied now, or a nak verdict when an event of a
        gap failed transiently (the batch then waits, and its successors with it).
        """
        seqs = [d.stream_seq for d in deliveries if d.stream_seq is not None]
        ahead = sorted(seq for seq in seqs if seq >= self.next_seq)
        last = ahead[-1] if ahead else None
        if last is None or ahead == list(range(self.next_seq, last + 1)):
            return None  # nothing missing: the batch itself continues the stream in order
        log.info(
            "stream seq %d..%d: JetStream holds earlier messages back; applying them from "
            "the stream first",
            self.next_seq,
            last,
        )
        while self.next_seq <= last:
            seq = self.next_seq
            try:
                raw = await self.js.get_msg(STREAM_NAME, seq)
            except NotFoundError:  # expired or deleted: nothing to apply
                self.next_seq += 1
                continue
            except (NatsError, TimeoutError) as exc:
                log.warning("cannot read stream seq %d yet: %r", seq, exc)
                return self.policy.backoff(1)
            self._attempts[seq] += 1
            delivery = Delivery(raw.subject or "", raw.data or b"", seq, self._attempts[seq])
            verdict = await decide(self.store, delivery, self.policy)
            if verdict.action == "nak":
                return verdict
            del self._attempts[seq]
            self.next_seq += 1
        return None

    def settled(self, deliveries: Sequence[Delivery], verdicts: Sequence[Verdict]) -> None:
        """Move past the messages of a batch acknowledged or terminated in stream order."""
        done = {d.stream_seq: v.action != "nak" for d, v in zip(deliveries, verdicts, strict=True)}
        while done.get(self.next_seq):
            self.next_seq += 1
