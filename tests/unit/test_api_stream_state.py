"""The SSE ids (cursors), the turn state machine behind a turn's stream, and the Prefer
header, without servers."""

from __future__ import annotations

import json
import uuid

import pytest

from taleforge.api.streaming.cursor import Cursor, InvalidCursor
from taleforge.api.streaming.turn_state import TurnState
from taleforge.api.streaming.turns import wait_preference
from taleforge.contracts import (
    ImageCompleted,
    ImageRequested,
    InputType,
    NarrationCompleted,
    NarrationDelta,
    TokenUsage,
    TurnFailed,
    TurnRequested,
)

SESSION, USER, TURN = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
COMMON = {"session_id": SESSION, "user_id": USER, "turn_id": TURN}


def test_cursors_round_trip_and_only_move_forward() -> None:
    cursor = Cursor.beginning(41)
    assert str(cursor) == "41-0-0-0"
    moved = cursor.at_story(45).at_live(7, attempt=2).at_story(44).at_live(6, attempt=1)
    assert (moved.story, moved.live, moved.attempt) == (45, 7, 2)
    assert Cursor.parse(str(moved)) == moved
    ended = moved.ending()
    assert str(ended) == "41-45-7-2-end" and Cursor.parse(str(ended)).ended


@pytest.mark.parametrize("text", ["", "abc", "1-2-3", "0-1-1-1", "1-2-3-4-done", "-1-2-3-4"])
def test_foreign_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)


def _delta(index: int, text: str, attempt: int = 1) -> bytes:
    return NarrationDelta(index=index, delta=text, attempt=attempt, **COMMON).to_bytes()


def _completed(image_ids: list[uuid.UUID] | None) -> NarrationCompleted:
    return NarrationCompleted(
        text="A dark night.",
        model="m",
        usage=TokenUsage(total_tokens=9),
        image_ids=image_ids,
        **COMMON,
    )


def test_a_turn_without_images_ends_with_its_narration() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION)
    accepted = state.apply_story(TurnRequested(input_type=InputType.SPEECH, text="Hi", **COMMON))
    assert accepted is not None and accepted.event == "turn.accepted"
    event, _ = state.apply_live(_delta(0, "A dark "))
    assert event is not None and event.event == "narration.delta"
    assert not state.finished and state.result() is None
    completed = state.apply_story(_completed([]))
    assert completed is not None and completed.event == "narration.completed"
    assert state.finished
    end = state.end_event()
    assert end.event == "turn.completed" and json.loads(end.json())["narration"] == "A dark night."
    # A piece arriving after the whole narration adds nothing.
    assert state.apply_live(_delta(1, "night."))[0] is None


def test_images_keep_the_turn_open_until_each_is_settled() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION)
    image = uuid.uuid4()
    state.apply_story(_completed([image]))
    assert not state.finished
    result = state.result()
    assert result is not None and result.images[0].status == "pending"
    state.apply_story(ImageRequested(image_id=image, prompt="a lantern", **COMMON))
    progress = json.dumps(
        {"type": "image.progress", "image_id": str(image), "value": 3, "max": 10}
    ).encode()
    assert state.apply_live(progress)[0] is not None
    ready = state.apply_story(
        ImageCompleted(
            image_id=image,
            bucket="b",
            object_name="o",
            size_bytes=1,
            sha256="0" * 64,
            width=8,
            height=8,
            **COMMON,
        )
    )
    assert ready is not None and ready.event == "image.ready"
    assert state.finished and state.end_event().data.images[0].url == f"/api/images/{image}"  # type: ignore[attr-defined]
    assert state.apply_live(progress)[0] is None  # progress of a finished picture is stale


def test_a_retry_resets_once_and_a_stale_attempt_is_dropped() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION)
    first, _ = state.apply_live(_delta(0, "Once ", attempt=1))
    retry, attempt = state.apply_live(_delta(0, "A dark ", attempt=2))
    stale, _ = state.apply_live(_delta(1, "upon ", attempt=1))
    assert first is not None and not json.loads(first.json())["reset"]
    assert retry is not None and json.loads(retry.json())["reset"] and attempt == 2
    assert stale is None


def test_a_resumed_stream_knows_the_attempt_the_client_had() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION, attempt=2)
    event, _ = state.apply_live(_delta(3, "more", attempt=2))
    assert event is not None and not json.loads(event.json())["reset"]


def test_a_failed_turn_ends_with_its_reason_and_ignores_the_rest() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION)
    assert state.apply_story(TurnFailed(code="x", reason="Nobody answered.", **COMMON)) is None
    assert state.finished
    end = state.end_event()
    assert end.event == "turn.failed"
    assert json.loads(end.json())["error"] == "Nobody answered."
    assert state.apply_live(_delta(0, "late"))[0] is None


def test_events_of_other_turns_and_junk_are_ignored() -> None:
    state = TurnState(turn_id=TURN, session_id=SESSION)
    other = {**COMMON, "turn_id": uuid.uuid4()}
    assert state.apply_story(TurnFailed(code="x", reason="not ours", **other)) is None
    assert not state.finished
    assert state.apply_live(b"not json")[0] is None
    assert state.apply_live(b'{"type": "narration.delta"}')[0] is None


@pytest.mark.parametrize(
    ("prefer", "wait"),
    [
        (None, 25.0),
        ("respond-async", 0.0),
        ("wait=3", 3.0),
        ("wait=100", 25.0),
        ("handling=lenient, wait=2.5", 2.5),
        ("wait=soon", 25.0),
    ],
)
def test_the_prefer_header_can_only_shorten_the_wait(prefer: str | None, wait: float) -> None:
    assert wait_preference(prefer, 25.0) == wait
