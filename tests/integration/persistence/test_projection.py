"""Each event's effect on the read model, applied through the repository on real Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    NarrationStarted,
    TokenUsage,
    TurnFailed,
)
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.projection import EventRejected

pytestmark = pytest.mark.integration

SHA = "ab" * 32


async def row(repo: Repository, sql: str, **params: Any) -> dict[str, Any]:
    async with repo.engine.connect() as conn:
        result = (await conn.execute(text(sql), params)).mappings().one()
    return dict(result)


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
