"""Contracts: validation, subjects, and the committed JSON Schemas."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from taleforge.contracts import (
    MSG_ID_HEADER,
    ImageRequested,
    InvalidEvent,
    NarrationCompleted,
    TurnRequested,
    event_subject,
    events_filter,
    live_subject,
    parse_event,
    parse_live_event,
    publish_headers,
)
from taleforge.contracts.schema_export import DEFAULT_DIR, render_schemas


def turn(**overrides: object) -> TurnRequested:
    fields: dict[str, object] = {
        "session_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "turn_id": uuid.uuid4(),
        "input_type": "action",
        "text": "I open the door",
    }
    fields.update(overrides)
    return TurnRequested.model_validate(fields)


def test_round_trip_through_bytes() -> None:
    event = turn()
    parsed = parse_event(event.to_bytes())
    assert parsed == event
    assert isinstance(parsed, TurnRequested)


def test_subject_puts_session_before_type() -> None:
    event = turn()
    assert event.subject() == f"story.events.{event.session_id}.turn.requested"
    assert events_filter(event.session_id) == f"story.events.{event.session_id}.>"
    assert events_filter(event_type="turn.requested") == "story.events.*.turn.requested"
    assert live_subject(event.session_id, event.turn_id) == (
        f"story.live.{event.session_id}.{event.turn_id}"
    )


def test_subject_rejects_wildcards_and_dots_in_ids() -> None:
    with pytest.raises(ValueError, match="cannot be used in a NATS subject"):
        event_subject("a.b", "turn.requested")
    with pytest.raises(ValueError, match="cannot be used in a NATS subject"):
        live_subject("*", uuid.uuid4())


def test_event_id_is_the_nats_msg_id() -> None:
    event = turn()
    assert publish_headers(event) == {MSG_ID_HEADER: str(event.event_id)}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "payload is not JSON"),
        (b"[1, 2]", "payload must be a JSON object"),
        (b"{}", "missing event type"),
        (b'{"type": "turn.exploded", "schema_version": 1}', "unknown event type 'turn.exploded'"),
        (b'{"type": "turn.requested", "schema_version": 9}', "unsupported schema_version 9"),
        (b'{"type": "turn.requested", "schema_version": 1}', "session_id: Field required"),
    ],
)
def test_malformed_payloads_fail_with_a_clear_message(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        parse_event(payload)


def test_unknown_fields_are_rejected() -> None:
    data = json.loads(turn().to_bytes())
    data["surprise"] = True
    with pytest.raises(InvalidEvent, match="surprise: Extra inputs are not permitted"):
        parse_event(data)


def test_bad_input_type_is_rejected() -> None:
    data = json.loads(turn().to_bytes())
    data["input_type"] = "shout"
    with pytest.raises(InvalidEvent, match="input_type"):
        parse_event(data)


def test_live_events_are_not_stream_events() -> None:
    payload = {
        "type": "narration.delta",
        "schema_version": 1,
        "session_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
        "turn_id": str(uuid.uuid4()),
        "index": 0,
        "delta": "Once",
    }
    assert parse_live_event(payload).type == "narration.delta"
    with pytest.raises(InvalidEvent, match="unknown event type 'narration.delta'"):
        parse_event(payload)


def test_image_request_bounds() -> None:
    base = {"session_id": uuid.uuid4(), "user_id": uuid.uuid4(), "turn_id": uuid.uuid4()}
    with pytest.raises(ValueError, match="prompt"):
        ImageRequested(**base, image_id=uuid.uuid4(), prompt="")
    with pytest.raises(ValueError, match="width"):
        ImageRequested(**base, image_id=uuid.uuid4(), prompt="a castle", width=10)


def test_usage_defaults_to_zero() -> None:
    done = NarrationCompleted(
        session_id=uuid.uuid4(), user_id=uuid.uuid4(), turn_id=uuid.uuid4(), text="x", model="m"
    )
    assert done.usage.total_tokens == 0


def test_committed_schemas_match_the_models() -> None:
    rendered = render_schemas()
    committed = {p.name: p.read_text() for p in Path(DEFAULT_DIR).glob("*.json")}
    assert set(committed) == set(rendered), "run `taleforge schemas export`"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} drifted: run `taleforge schemas export`"
