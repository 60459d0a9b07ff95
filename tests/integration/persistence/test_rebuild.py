"""Rebuild from the log: play a few sessions through the live service into database A,
replay the stream into database B, and the two are equal row for row."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats
import pytest
from faststream import TestApp

from taleforge.contracts import (
    STREAM_NAME,
    Envelope,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    NarrationStarted,
    TokenUsage,
    TurnFailed,
    event_subject,
    publish_headers,
)
from taleforge.persistence.app import create_app
from taleforge.persistence.rebuild import rebuild
from taleforge.persistence.settings import Settings

from ...support import asyncpg_dsn
from .conftest import Story
from .test_service import wait_for

pytestmark = pytest.mark.integration

# Bookkeeping times differ between the live run and the replay by nature; nothing else may.
IGNORED = {"processed_at", "first_seen_at", "last_seen_at"}
TABLES = {
    "scenarios": "id",
    "story_sessions": "id",
    "turns": "id",
    "images": "id",
    "saves": "id",
    "usage_ledger": "user_id, day",
    "processed_events": "event_id",
    "dead_letters": "stream_seq",
}


@pytest.fixture
async def second_database_url(new_database: Callable[[], Awaitable[str]]) -> str:
    return await new_database()


def play(story: Story, turns: int, *, fail_last: bool = False) -> list[Envelope]:
    """A session's events as the services would publish them."""
    events: list[Envelope] = [story.started()]
    for n in range(turns):
        turn = story.turn(f"I go on ({n})")
        ids = story.ids(turn.turn_id)
        events += [turn, NarrationStarted(**ids, model="m")]
        if fail_last and n == turns - 1:
            events.append(TurnFailed(**ids, code="provider_auth", reason="The narrator is away."))
            continue
        usage = TokenUsage(
            input_tokens=100 + n, cached_tokens=50, output_tokens=20, total_tokens=120 + n
        )
        events.append(
            NarrationCompleted(**ids, text=f"Beat {n}.", model="m", usage=usage, cost_usd=0.001 * n)
        )
        image_id = uuid.uuid5(turn.turn_id, "image:scene")
        events.append(ImageRequested(**ids, image_id=image_id, prompt=f"scene {n}", seed=n))
        if n % 2:
            events.append(
                ImageFailed(**ids, image_id=image_id, code="render", reason="GPU on fire")
            )
        else:
            events.append(
                ImageCompleted(
                    **ids,
                    image_id=image_id,
                    bucket="taleforge-images",
                    object_name=f"{image_id}.png",
                    size_bytes=100 + n,
                    sha256="0" * 64,
                    width=512,
                    height=512,
                    template="scene",
                    template_version=n,
                )
            )
    return events


async def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = {}
        for table, order in TABLES.items():
            rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            tables[table] = [
                {
                    k: v
                    for k, v in row.items()
                    if k not in IGNORED and (table, k) != ("dead_letters", "id")
                }
                for row in rows
            ]
        return tables
    finally:
        await conn.close()


async def test_a_rebuild_equals_the_live_projection_row_for_row(
    nats_url: str, database_url: str, second_database_url: str
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    stories = [Story(user_id=alice), Story(user_id=alice), Story(user_id=bob)]
    events = play(stories[0], 3) + play(stories[1], 2, fail_last=True) + play(stories[2], 4)
    # Redelivery-like noise the projection must shrug off the same way both times.
    late_completion = next(e for e in events if isinstance(e, NarrationCompleted))
    noise = late_completion.model_copy(update={"event_id": uuid.uuid4(), "text": "again"})
    orphan = stories[0].turn().model_copy(update={"session_id": uuid.uuid4()})

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    settings = Settings(nats_url=nats_url, database_url=database_url, persistence_batch_size=7)
    try:
        async with TestApp(create_app(settings)):
            for event in [*events, noise, orphan]:
                await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))
            await js.publish(event_subject(stories[2].session_id, "turn.requested"), b"{not json")
            published = len(events) + 3

            async def settled() -> bool:
                conn = await asyncpg.connect(asyncpg_dsn(database_url))
                try:
                    done = await conn.fetchval(
                        "SELECT (SELECT count(*) FROM processed_events)"
                        " + (SELECT count(*) FROM dead_letters)"
                    )
                finally:
                    await conn.close()
                return bool(done == published)

            await wait_for(settled, timeout=20)

        report = await rebuild(second_database_url, nats_url, batch_size=5, progress=False)
        assert (report.events, report.dead_letters) == (published, 2)
        # Nothing left behind on the server but the live service's durable consumer.
        assert [c.name for c in await js.consumers_info(STREAM_NAME)] == ["persistence"]
    finally:
        await nc.close()

    live, rebuilt = await snapshot(database_url), await snapshot(second_database_url)
    assert len(live["turns"]) == 9 and len(live["images"]) == 8 and len(live["usage_ledger"]) == 2
    for table in TABLES:
        assert rebuilt[table] == live[table], table

    # Run again into the same database: every event is already there, nothing changes.
    await rebuild(second_database_url, nats_url, progress=False)
    assert await snapshot(second_database_url) == live
