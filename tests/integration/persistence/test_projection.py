"""Each event's effect on the read model, applied through the repository on real Postgres,
one by one and in batches (one transaction, a poison event falling back to one by one)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    MemoryFolded,
    NarrationCompleted,
    NarrationStarted,
    TokenUsage,
    TurnFailed,
)
from taleforge.contracts.events import ScenarioSnapshot
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.delivery import ACK, TERM, Delivery, RetryPolicy, decide_batch
from taleforge.persistence.projection import EventRejected

pytestmark = pytest.mark.integration

SHA = "ab" * 32


async def row(repo: Repository, sql: str, **params: Any) -> dict[str, Any]:
    async with repo.engine.connect() as conn:
        result = (await conn.execute(text(sql), params)).mappings().one()
    return dict(result)


async def rows(repo: Repository, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with repo.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


async def count(repo: Repository, table: str) -> int:
    return int((await row(repo, f"SELECT count(*) AS n FROM {table}"))["n"])


async def test_session_started_creates_the_session(repo: Repository, story: Any) -> None:
    event = story.started()
    assert await repo.apply_event(event, stream_seq=1)
    session = await row(repo, "SELECT * FROM story_sessions WHERE id = :id", id=story.session_id)
    assert session["user_id"] == story.user_id
    assert (session["title"], session["scenario_id"], session["opening"]) == (
        "The Lighthouse",
        "lighthouse",
        "Fog rolls in.",
    )
    assert session["turn_count"] == 0
    assert session["created_at"] == event.occurred_at
    processed = await row(repo, "SELECT * FROM processed_events")
    assert processed["event_id"] == event.event_id
    assert processed["stream_seq"] == 1
    assert processed["event_type"] == "session.started"


async def test_turns_are_numbered_in_stream_order(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    first, second = story.turn("Hello?"), story.turn("Anyone there?")
    await repo.apply_event(first)
    await repo.apply_event(second)
    one = await row(repo, "SELECT * FROM turns WHERE id = :id", id=first.turn_id)
    two = await row(repo, "SELECT * FROM turns WHERE id = :id", id=second.turn_id)
    assert (one["seq"], two["seq"]) == (1, 2)
    assert one["status"] == "pending"
    assert (one["input_type"], one["input_text"]) == ("action", "Hello?")
    session = await row(repo, "SELECT * FROM story_sessions")
    assert session["turn_count"] == 2
    assert session["updated_at"] == second.occurred_at


async def test_the_same_event_twice_changes_nothing(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    assert await repo.apply_event(turn) is True
    before = await row(repo, "SELECT * FROM story_sessions")
    assert await repo.apply_event(turn) is False
    assert await repo.apply_event(story.started()) is True  # a new event id, same session
    assert await row(repo, "SELECT * FROM story_sessions") == before
    assert await count(repo, "turns") == 1


async def test_narration_started_then_completed(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    started = NarrationStarted(**story.ids(turn.turn_id), model="gpt-test")
    await repo.apply_event(started)
    narrating = await row(repo, "SELECT * FROM turns")
    assert narrating["status"] == "narrating"
    assert narrating["started_at"] == started.occurred_at

    completed = NarrationCompleted(
        **story.ids(turn.turn_id),
        text="The stairs creak.",
        model="gpt-test",
        usage=TokenUsage(
            input_tokens=10, cached_tokens=2, output_tokens=5, reasoning_tokens=1, total_tokens=15
        ),
        response_id="resp_1",
        time_to_first_token_ms=12.5,
        duration_ms=80.0,
    )
    await repo.apply_event(completed)
    done = await row(repo, "SELECT * FROM turns")
    assert done["status"] == "completed"
    assert done["narration"] == "The stairs creak."
    assert (done["input_tokens"], done["cached_tokens"], done["output_tokens"]) == (10, 2, 5)
    assert (done["reasoning_tokens"], done["total_tokens"]) == (1, 15)
    assert (done["response_id"], done["time_to_first_token_ms"], done["duration_ms"]) == (
        "resp_1",
        12.5,
        80.0,
    )
    assert done["completed_at"] == completed.occurred_at

    # A late NarrationStarted (another delivery attempt) never moves the turn backwards.
    late = NarrationStarted(**story.ids(turn.turn_id), model="gpt-test", attempt=2)
    assert await repo.apply_event(late) is True
    assert (await row(repo, "SELECT status FROM turns"))["status"] == "completed"


async def test_turn_failed(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    await repo.apply_event(
        TurnFailed(**story.ids(turn.turn_id), code="provider_auth", reason="The narrator is away.")
    )
    failed = await row(repo, "SELECT * FROM turns")
    assert (failed["status"], failed["error_code"], failed["error"]) == (
        "failed",
        "provider_auth",
        "The narrator is away.",
    )


async def test_image_requested_then_completed(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    image_id = uuid.uuid4()
    await repo.apply_event(
        ImageRequested(**story.ids(turn.turn_id), image_id=image_id, prompt="a lighthouse", seed=7)
    )
    pending = await row(repo, "SELECT * FROM images")
    assert (pending["id"], pending["status"], pending["prompt"]) == (
        image_id,
        "pending",
        "a lighthouse",
    )
    assert (pending["kind"], pending["seed"], pending["width"]) == ("scene", 7, 512)

    await repo.apply_event(
        ImageCompleted(
            **story.ids(turn.turn_id),
            image_id=image_id,
            bucket="taleforge-images",
            object_name=f"{image_id}.png",
            size_bytes=1234,
            sha256=SHA,
            width=640,
            height=480,
        )
    )
    done = await row(repo, "SELECT * FROM images")
    assert done["status"] == "completed"
    assert (done["bucket"], done["object_name"], done["content_type"]) == (
        "taleforge-images",
        f"{image_id}.png",
        "image/png",
    )
    assert (done["size_bytes"], done["sha256"], done["width"], done["height"]) == (
        1234,
        SHA,
        640,
        480,
    )
    assert done["completed_at"] is not None


async def test_image_failed(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    image_id = uuid.uuid4()
    ids = story.ids(turn.turn_id)
    await repo.apply_event(ImageRequested(**ids, image_id=image_id, prompt="a storm"))
    await repo.apply_event(ImageFailed(**ids, image_id=image_id, code="comfy_down", reason="no"))
    failed = await row(repo, "SELECT * FROM images")
    assert (failed["status"], failed["error_code"], failed["error"]) == (
        "failed",
        "comfy_down",
        "no",
    )


async def test_events_about_unknown_rows_are_rejected(repo: Repository, story: Any) -> None:
    with pytest.raises(EventRejected, match="unknown session"):
        await repo.apply_event(story.turn())
    with pytest.raises(EventRejected, match="unknown turn"):
        await repo.apply_event(NarrationStarted(**story.ids(uuid.uuid4()), model="m"))
    with pytest.raises(EventRejected, match="unknown turn"):
        await repo.apply_event(
            ImageRequested(**story.ids(uuid.uuid4()), image_id=uuid.uuid4(), prompt="x")
        )
    # A rejected event is not marked processed: nothing was applied.
    assert await count(repo, "processed_events") == 0


async def test_a_turn_in_another_users_session_is_rejected(repo: Repository, story: Any) -> None:
    await repo.apply_event(story.started())
    intruder = story.turn()
    intruder = intruder.model_copy(update={"user_id": uuid.uuid4()})
    with pytest.raises(EventRejected, match="another user"):
        await repo.apply_event(intruder)
    assert await count(repo, "turns") == 0


async def test_dead_letters_are_kept_once_per_stream_sequence(repo: Repository) -> None:
    for attempt in (1, 2):
        await repo.record_dead_letter(
            stream_seq=42,
            subject="story.events.x.turn.requested",
            payload=b"{not json\x00",
            reason=f"attempt {attempt}",
            delivery_count=attempt,
        )
    letter = await row(repo, "SELECT * FROM dead_letters")
    assert (letter["stream_seq"], letter["reason"], letter["delivery_count"]) == (
        42,
        "attempt 2",
        2,
    )
    assert letter["payload"].startswith("{not json")
    assert await count(repo, "dead_letters") == 1


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
    next_day = (day + timedelta(hours=1, minutes=10)).astimezone(timezone(timedelta(hours=2)))
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


async def test_a_memory_fold_is_billed_to_the_day_but_counts_no_turn(
    repo: Repository, story: Any
) -> None:
    day = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    await repo.apply_event(story.started())
    turn = story.turn()
    await repo.apply_event(turn)
    await repo.apply_event(completed(story, turn.turn_id, at=day, cost=0.001, out=10))
    fold = MemoryFolded(
        **story.ids(turn.turn_id),
        summary="So far: a lamp was lit.",
        summarized_through=1,
        folded_turns=1,
        model="summary-m",
        usage=TokenUsage(input_tokens=300, output_tokens=20, total_tokens=320),
        cost_usd=0.0004,
        occurred_at=day,
    )
    await repo.apply_event(fold)
    await repo.apply_event(fold)  # redelivered: billed once

    [ledger] = await rows(repo, "SELECT * FROM usage_ledger")
    assert (ledger["completed_turns"], ledger["input_tokens"], ledger["output_tokens"]) == (
        1,
        400,
        30,
    )
    assert ledger["cost_usd"] == Decimal("0.001400")


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
