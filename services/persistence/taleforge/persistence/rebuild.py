"""Rebuild every projection from the event log into a database.

`python -m taleforge.persistence rebuild --into postgresql+asyncpg://…/scratch` migrates the
target, then replays the whole STORY stream through the same code the live service runs
(`decide_batch` → `Repository.apply_batch`): a batch per fetch, one transaction each, poison
events dead-lettered as they would be live. Applying is idempotent (processed event ids), so a
target that already holds some of the log, or a rebuild interrupted and run again, ends equal.

The stream is read by an ephemeral pull consumer with no acks, created here and deleted when
done (and expired by the server after `INACTIVE_S` if this process dies): no durable consumer
is left behind and the live service's consumer is untouched. Progress (events, rate, ETA) goes
to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from tqdm import tqdm

from taleforge.contracts import STREAM_NAME, STREAM_SUBJECTS
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.consumer import as_delivery
from taleforge.persistence.delivery import Delivery, RetryPolicy, decide_batch
from taleforge.persistence.migrations import upgrade_to_head_async

log = logging.getLogger(__name__)

INACTIVE_S = 60.0  # the server deletes the consumer this long after the last fetch
FETCH_TIMEOUT_S = 5.0
STALLED_FETCHES = 3  # empty fetches in a row before giving up on an unfinished log
MAX_ATTEMPTS = 20  # per batch, while the target database is unavailable


@dataclass
class RebuildReport:
    events: int = 0  # messages read from the stream and applied (or found already applied)
    dead_letters: int = 0  # dead letters in the target afterwards
    last_seq: int = 0  # the stream sequence read up to
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def _apply(repo: Repository, deliveries: Sequence[Delivery], policy: RetryPolicy) -> None:
    """Apply a fetched batch as the live service would, waiting out database outages."""
    pending = list(deliveries)
    while True:
        verdicts = await decide_batch(repo, pending, policy)
        retry = [d for d, v in zip(pending, verdicts, strict=True) if v.action == "nak"]
        if not retry:
            return
        if retry[0].attempt >= MAX_ATTEMPTS:
            raise RuntimeError(f"gave up at seq {retry[0].stream_seq}: the database keeps failing")
        delay = max(v.delay_s for v in verdicts if v.action == "nak")
        log.warning("retrying from seq %s in %.1fs", retry[0].stream_seq, delay)
        await asyncio.sleep(delay)
        pending = [replace(d, attempt=d.attempt + 1) for d in retry]


async def rebuild(
    database_url: str,
    nats_url: str,
    *,
    batch_size: int = 500,
    progress: bool = True,
) -> RebuildReport:
    """Replay the STORY stream, as it is now, into `database_url` (migrated first)."""
    policy = RetryPolicy()  # the live service's defaults
    started = time.perf_counter()
    report = RebuildReport()
    await upgrade_to_head_async(database_url)
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    repo = Repository(create_engine(database_url))
    js = nc.jetstream()
    consumer_name: str | None = None
    bar: tqdm[None] | None = None
    try:
        state = (await js.stream_info(STREAM_NAME)).state
        first, last = state.first_seq, state.last_seq
        total = state.messages
        bar = tqdm(
            total=total,
            unit="ev",
            unit_scale=True,
            desc="rebuild",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        )
        if total:
            consumer = await js.add_consumer(
                STREAM_NAME,
                ConsumerConfig(
                    filter_subject=STREAM_SUBJECTS[0],
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=INACTIVE_S,
                    mem_storage=True,
                ),
            )
            consumer_name = consumer.name
            sub = await js.pull_subscribe_bind(consumer=consumer_name, stream=STREAM_NAME)
            log.info("replaying %d events (seq %d..%d) into the target", total, first, last)
            seq, stalled = first - 1, 0
            while seq < last:
                try:
                    raws = await sub.fetch(batch_size, timeout=FETCH_TIMEOUT_S)
                except TimeoutError:
                    stalled += 1
                    if stalled >= STALLED_FETCHES:
                        raise RuntimeError(
                            f"the stream stopped delivering after seq {seq}"
                        ) from None
                    continue
                stalled = 0
                await _apply(repo, [as_delivery(r) for r in raws], policy)
                report.events += len(raws)
                seq = raws[-1].metadata.sequence.stream
                report.last_seq = seq
                bar.update(len(raws))
        report.dead_letters = await repo.count_dead_letters()
    except asyncio.CancelledError:
        log.warning(
            "rebuild interrupted after seq %d; run it again to finish (applied events are skipped)",
            report.last_seq,
        )
        raise
    finally:
        report.seconds = time.perf_counter() - started
        if bar is not None:
            bar.close()
        if consumer_name is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(STREAM_NAME, consumer_name)
        await repo.close()
        with contextlib.suppress(Exception):
            await nc.close()
    return report
