"""Persistence applies the stream in order even when JetStream hands earlier messages back
late: a batch a killed predecessor held, or a batch naked while Postgres was away, is
redelivered only after ack_wait / the nak delay, while newer messages are delivered at once.

Found by the fault suite (tests/faults): persistence killed mid-transaction, restarted, and
the turn's narration was applied (dead-lettered as about an unknown turn) before the turn.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats
import pytest
from sqlalchemy import text

from taleforge.contracts import (
    STREAM_NAME,
    Envelope,
    NarrationCompleted,
    NarrationStarted,
    StoryEvent,
)
from taleforge.contracts import publish_headers as headers_of
from taleforge.persistence.adapters.event_log import (
    ensure_consumer,
    ensure_stream,
    persistence_consumer_config,
)
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.consumer import EventConsumer
from taleforge.persistence.delivery import RetryPolicy

pytestmark = pytest.mark.integration

# Far longer than the test: a message held back stays held back unless we fill the gap.
ACK_WAIT_S = 60.0


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_consumer(
            js, persistence_consumer_config(ack_wait_s=ACK_WAIT_S, max_ack_pending=100)
        )
        yield js
    finally:
        await nc.close()


async def publish(js: Any, event: Envelope) -> None:
    await js.publish(event.subject(), event.to_bytes(), headers=headers_of(event))


class RecordingRepository(Repository):
    """Postgres 'down' for the first `failures` writes; records what was applied, in order."""

    def __init__(self, database_url: str, failures: int = 0) -> None:
        super().__init__(create_engine(database_url))
        self.failures = failures
        self.applied: list[str] = []

    async def apply_batch(self, events: Sequence[tuple[StoryEvent, int | None]]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("connection refused (simulated outage)")
        applied = await super().apply_batch(events)
        self.applied += [e.type for (e, _), new in zip(events, applied, strict=True) if new]
        return applied


async def run_until(repo: Repository, js: Any, condition: Any, policy: RetryPolicy) -> None:
    consumer = EventConsumer(repo, policy, durable="persistence", batch_size=100)
    await consumer.start(js)
    try:
        async with asyncio.timeout(ACK_WAIT_S / 2):
            while not await condition():
                await asyncio.sleep(0.05)
    finally:
        await consumer.stop(5)


async def turn_status(repo: Repository, turn_id: uuid.UUID) -> str | None:
    async with repo.engine.connect() as conn:
        status = await conn.scalar(text("SELECT status FROM turns WHERE id = :id"), {"id": turn_id})
    return None if status is None else str(status)


async def dead_letters(repo: Repository) -> int:
    return await repo.count_dead_letters()


async def test_a_batch_held_by_a_killed_consumer_is_applied_before_newer_events(
    js: Any, migrated_database_url: str, story: Any
) -> None:
    turn = story.turn()
    await publish(js, story.started())
    await publish(js, turn)
    # The predecessor fetched both and was killed before settling them: JetStream keeps
    # them for ACK_WAIT_S and delivers what comes next to the new process right away.
    predecessor = await js.pull_subscribe_bind(durable="persistence", stream=STREAM_NAME)
    assert len(await predecessor.fetch(2, timeout=5)) == 2
    ids = story.ids(turn.turn_id)
    await publish(js, NarrationStarted(**ids, model="m"))
    await publish(js, NarrationCompleted(**ids, text="The stairs creak.", model="m"))

    repo = RecordingRepository(migrated_database_url)
    try:

        async def completed() -> bool:
            return await turn_status(repo, turn.turn_id) == "completed"

        await run_until(repo, js, completed, RetryPolicy(base_s=0.05))
        assert repo.applied == [
            "session.started",
            "turn.requested",
            "narration.started",
            "narration.completed",
        ]
        assert await dead_letters(repo) == 0
    finally:
        await repo.close()


async def test_events_fetched_while_an_earlier_one_waits_out_an_outage_wait_for_it(
    js: Any, migrated_database_url: str, story: Any
) -> None:
    # The session's first write fails and is naked for 2 s; the turn is published meanwhile
    # and delivered at once. It must not be applied before its session.
    repo = RecordingRepository(migrated_database_url, failures=1)
    turn = story.turn()
    try:
        await publish(js, story.started())

        async def outage_seen() -> bool:
            return repo.failures == 0

        consumer = EventConsumer(
            repo, RetryPolicy(base_s=2.0), durable="persistence", batch_size=100
        )
        await consumer.start(js)
        try:
            async with asyncio.timeout(20):
                while not await outage_seen():
                    await asyncio.sleep(0.02)
                await publish(js, turn)
                while await turn_status(repo, turn.turn_id) is None:
                    await asyncio.sleep(0.05)
        finally:
            await consumer.stop(5)
        assert repo.applied[:2] == ["session.started", "turn.requested"]
        assert await dead_letters(repo) == 0
    finally:
        await repo.close()
