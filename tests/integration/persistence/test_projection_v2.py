"""What migration 0002 added to the projection (turn parents and heads, the usage ledger,
templates, the scenario snapshot) and batches applied in one transaction, on real Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from taleforge.contracts import (
    ImageCompleted,
    ImageRequested,
    NarrationCompleted,
    TokenUsage,
)
from taleforge.contracts.events import ScenarioSnapshot
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.delivery import ACK, TERM, Delivery, RetryPolicy, decide_batch

pytestmark = pytest.mark.integration


async def rows(repo: Repository, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with repo.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


def completed(story: Any, turn_id: uuid.UUID, *, at: datetime, cost: float | None, out: int):
    return NarrationCompleted(
        **story.ids(turn_id),
        text="The lamp is lit.",
        model="m",
        usage=TokenUsage(
            input_tokens=100, cached_tokens=40, output_tokens=out, total_tokens=100 + out
        ),
        cost_usd=cost,
        occurred_at=at,
    )


async def test_each_turn_continues_the_head_and_becomes_it(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    first, second = story.turn("Hello?"), story.turn("Anyone there?")
    await repo.apply_event(first)
    await repo.apply_event(second)
    await repo.apply_event(second)  # the same event again: no new turn, head unchanged

    turns = await rows(repo, "SELECT id, seq, parent_turn_id FROM turns ORDER BY seq")
    assert [(t["id"], t["parent_turn_id"]) for t in turns] == [
        (first.turn_id, None),
        (second.turn_id, first.turn_id),
    ]
    [session] = await rows(repo, "SELECT head_turn_id, turn_count FROM story_sessions")
    assert (session["head_turn_id"], session["turn_count"]) == (second.turn_id, 2)


async def test_the_usage_ledger_sums_each_completion_once_per_day(
    repo: Repository, story: Any
) -> None:
    day = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    await repo.apply_event(story.started())
    a, b, c = story.turn(), story.turn(), story.turn()
    for turn in (a, b, c):
        await repo.apply_event(turn)
    await repo.apply_event(completed(story, a.turn_id, at=day, cost=0.0012, out=10))
    await repo.apply_event(
        completed(story, b.turn_id, at=day + timedelta(minutes=10), cost=None, out=5)
    )
    # A second completion of turn a (another event id): the turn is already completed.
    await repo.apply_event(completed(story, a.turn_id, at=day, cost=0.5, out=99))
    # 00:40 UTC the next day, whatever the offset it was written with.
    next_day = (day + timedelta(hours=1, minutes=10)).astimezone(timezone_plus_2())
    await repo.apply_event(completed(story, c.turn_id, at=next_day, cost=0.002, out=1))

    ledger = await rows(repo, "SELECT * FROM usage_ledger ORDER BY day")
    assert [(r["user_id"], r["day"].isoformat()) for r in ledger] == [
        (story.user_id, "2026-11-20"),
        (story.user_id, "2026-11-21"),
    ]
    first = ledger[0]
    assert (first["completed_turns"], first["input_tokens"], first["cached_tokens"]) == (2, 200, 80)
    assert (first["output_tokens"], first["total_tokens"]) == (15, 215)
    assert first["cost_usd"] == Decimal("0.001200")
    assert ledger[1]["cost_usd"] == Decimal("0.002000")
    [turn_a] = await rows(repo, "SELECT cost_usd FROM turns WHERE id = :id", id=a.turn_id)
    assert turn_a["cost_usd"] == Decimal("0.001200")


def timezone_plus_2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


async def test_images_record_their_template_and_version(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    image_id = uuid.uuid4()
    ids = story.ids(turn.turn_id)
    await repo.apply_event(ImageRequested(**ids, image_id=image_id, prompt="a lamp"))
    await repo.apply_event(
        ImageCompleted(
            **ids,
            image_id=image_id,
            bucket="b",
            object_name="o.png",
            size_bytes=1,
            sha256="0" * 64,
            width=8,
            height=8,
            template="scene",
            template_version=3,
        )
    )
    [image] = await rows(repo, "SELECT template, template_version FROM images")
    assert (image["template"], image["template_version"]) == ("scene", 3)


async def test_story_state_starts_with_the_scenario_snapshot(repo: Repository, story: Any) -> None:
    snapshot = ScenarioSnapshot(world="A lighthouse at the edge of the map.", tone="eerie")
    await repo.apply_event(story.started().model_copy(update={"scenario": snapshot}))
    [session] = await rows(repo, "SELECT story_state FROM story_sessions")
    assert session["story_state"]["scenario"]["world"] == "A lighthouse at the edge of the map."
    assert session["story_state"]["scenario"]["tone"] == "eerie"


async def test_a_batch_applies_in_order_and_skips_events_already_applied(
    repo: Repository, story: Any
) -> None:
    started, first, second = story.started(), story.turn("one"), story.turn("two")
    assert await repo.apply_batch([(started, 1), (first, 2)]) == [True, True]
    # Redelivered with the next one, and a repeat inside the batch: applied once each.
    assert await repo.apply_batch([(first, 2), (second, 3), (second, 3)]) == [False, True, False]
    turns = await rows(repo, "SELECT input_text, seq FROM turns ORDER BY seq")
    assert [(t["input_text"], t["seq"]) for t in turns] == [("one", 1), ("two", 2)]
    processed = await rows(repo, "SELECT stream_seq FROM processed_events ORDER BY stream_seq")
    assert [p["stream_seq"] for p in processed] == [1, 2, 3]


def delivery(event: Any, seq: int) -> Delivery:
    payload = event if isinstance(event, bytes) else event.to_bytes()
    return Delivery(
        subject="story.events.x.turn.requested", payload=payload, stream_seq=seq, attempt=1
    )


async def test_a_poison_event_in_a_batch_is_dead_lettered_and_the_rest_apply(
    repo: Repository, story: Any
) -> None:
    orphan = story.turn().model_copy(update={"session_id": uuid.uuid4()})
    good = story.turn("still here")
    batch = [
        delivery(story.started(), 1),
        delivery(orphan, 2),
        delivery(b'{"type": "turn.requested"', 3),
        delivery(good, 4),
    ]
    verdicts = await decide_batch(repo, batch, RetryPolicy())
    assert verdicts == [ACK, TERM, TERM, ACK]
    [turn] = await rows(repo, "SELECT id, seq FROM turns")
    assert (turn["id"], turn["seq"]) == (good.turn_id, 1)
    letters = await rows(repo, "SELECT stream_seq, reason FROM dead_letters ORDER BY stream_seq")
    assert [letter["stream_seq"] for letter in letters] == [2, 3]
    assert "unknown session" in letters[0]["reason"]
