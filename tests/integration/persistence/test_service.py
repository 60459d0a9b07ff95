"""The persistence service's app against real NATS JetStream and real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import nats
import pytest
from faststream import TestApp
from nats.js.api import RetentionPolicy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from taleforge.contracts import (
    STREAM_NAME,
    Envelope,
    ImageCompleted,
    ImageRequested,
    NarrationCompleted,
    NarrationStarted,
    StoryEvent,
    event_subject,
    publish_headers,
)
from taleforge.persistence.adapters.event_log import (
    ensure_consumer,
    ensure_stream,
    persistence_consumer_config,
)
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.app import create_app
from taleforge.persistence.settings import Settings

pytestmark = pytest.mark.integration


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
async def query(database_url: str) -> AsyncIterator[Callable[..., Awaitable[list[dict[str, Any]]]]]:
    engine = create_async_engine(database_url)

    async def run(sql: str, **params: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]

    try:
        yield run
    finally:
        await engine.dispose()


def settings_for(nats_url: str, database_url: str) -> Settings:
    # The empty database is migrated by the app's start-up, as in production.
    return Settings(
        nats_url=nats_url,
        database_url=database_url,
        persistence_retry_base_s=0.05,
        persistence_retry_max_s=0.2,
        persistence_startup_timeout_s=10,
    )


async def publish(js: Any, event: Envelope) -> Any:
    return await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))


async def test_service_projects_published_events(
    nats_url: str, database_url: str, js: Any, query: Any, story: Any
) -> None:
    async with TestApp(create_app(settings_for(nats_url, database_url))):
        info = await js.stream_info(STREAM_NAME)
        assert info.config.retention == RetentionPolicy.LIMITS

        turn = story.turn()
        ids = story.ids(turn.turn_id)
        image_id = uuid.uuid5(turn.turn_id, "image:scene")
        completed = NarrationCompleted(**ids, text="The lamp is lit.", model="m")
        for event in (
            story.started(),
            turn,
            NarrationStarted(**ids, model="m"),
            completed,
            ImageRequested(**ids, image_id=image_id, prompt="a lamp"),
            ImageCompleted(
                **ids,
                image_id=image_id,
                bucket="taleforge-images",
                object_name="lamp.png",
                size_bytes=10,
                sha256="0" * 64,
                width=512,
                height=512,
            ),
        ):
            await publish(js, event)
        # Published again within the duplicate window: JetStream stores it once.
        assert (await publish(js, completed)).duplicate is True

        image = await wait_for(lambda: query("SELECT * FROM images WHERE status = 'completed'"))
        assert image[0]["object_name"] == "lamp.png"
        [row] = await query("SELECT * FROM turns")
        assert (row["seq"], row["status"], row["narration"]) == (1, "completed", "The lamp is lit.")
        [session] = await query("SELECT * FROM story_sessions")
        assert session["turn_count"] == 1
        assert len(await query("SELECT * FROM processed_events")) == 6


async def test_malformed_message_is_dead_lettered_and_the_stream_moves_on(
    nats_url: str, database_url: str, js: Any, query: Any, story: Any
) -> None:
    async with TestApp(create_app(settings_for(nats_url, database_url))):
        await publish(js, story.started())
        bad = await js.publish(
            event_subject(story.session_id, "turn.requested"), b'{"type": "turn.requested"'
        )
        orphan = story.turn().model_copy(update={"session_id": uuid.uuid4()})
        orphan_ack = await publish(js, orphan)
        good = story.turn()
        await publish(js, good)

        await wait_for(lambda: query("SELECT * FROM turns WHERE id = :id", id=good.turn_id))
        letters = await wait_for(lambda: query("SELECT * FROM dead_letters ORDER BY stream_seq"))
        assert [letter["stream_seq"] for letter in letters] == [bad.seq, orphan_ack.seq]
        assert letters[0]["reason"].startswith("invalid event: payload is not JSON")
        assert letters[0]["subject"].endswith(".turn.requested")
        assert letters[0]["payload"] == '{"type": "turn.requested"'
        assert "unknown session" in letters[1]["reason"]
        [turn] = await query("SELECT seq FROM turns")
        assert turn["seq"] == 1

        # Terminated, not left pending: the consumer has nothing outstanding.
        consumer = await js.consumer_info(STREAM_NAME, "persistence")
        assert consumer.num_ack_pending == 0
        assert consumer.num_pending == 0


async def test_consumer_config_is_updated_in_place(js: Any) -> None:
    await ensure_stream(js)
    await ensure_consumer(js, persistence_consumer_config(ack_wait_s=5, max_deliver=3))
    await ensure_consumer(js, persistence_consumer_config(ack_wait_s=45, max_deliver=9))
    info = await js.consumer_info(STREAM_NAME, "persistence")
    assert (info.config.ack_wait, info.config.max_deliver) == (45, 9)
    assert info.config.max_ack_pending == 1
    assert info.config.filter_subject == "story.events.>"


class FlakyRepository(Repository):
    """Postgres 'down' for the first `failures` writes it is asked for (every write, single
    events too, goes through `apply_batch`)."""

    def __init__(self, database_url: str, failures: int) -> None:
        super().__init__(create_engine(database_url))
        self.failures = failures
        self.attempts = 0

    def _maybe_fail(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionRefusedError("connection refused (simulated outage)")

    async def apply_batch(self, events: Sequence[tuple[StoryEvent, int | None]]) -> list[bool]:
        self._maybe_fail()
        return await super().apply_batch(events)


async def test_a_database_outage_is_retried_in_stream_order(
    nats_url: str, migrated_database_url: str, js: Any, query: Any, story: Any
) -> None:
    repo = FlakyRepository(migrated_database_url, failures=2)
    settings = settings_for(nats_url, migrated_database_url)
    async with TestApp(create_app(settings, repository=repo)):
        first = await publish(js, story.started())
        turn = story.turn()
        await publish(js, turn)
        await wait_for(lambda: query("SELECT * FROM turns WHERE id = :id", id=turn.turn_id))
    # The session waited out the outage (nak, redelivered) and the turn came after it.
    assert repo.attempts > 2
    assert await query("SELECT * FROM dead_letters") == []
    [processed] = await query(
        "SELECT stream_seq FROM processed_events WHERE event_type = 'session.started'"
    )
    assert processed["stream_seq"] == first.seq
