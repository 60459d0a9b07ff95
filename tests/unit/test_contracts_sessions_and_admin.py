"""Contracts of sessions as a whole, saves and admin events: subjects and round trips."""

from __future__ import annotations

import uuid

import pytest

from taleforge.contracts import (
    NO_SESSION,
    DeadLetterRetried,
    InvalidEvent,
    SaveCreated,
    SaveDeleted,
    ScenarioDeleted,
    ScenarioUpserted,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
    SettingsChanged,
    admin_filter,
    events_filter,
    parse_event,
)

SESSION, USER = uuid.uuid4(), uuid.uuid4()
OWN = {"session_id": SESSION, "user_id": USER}
EVENTS = [
    SessionRenamed(**OWN, title="The Ferry"),
    SessionDeleted(**OWN),
    SaveCreated(**OWN, turn_id=uuid.uuid4(), save_id=uuid.uuid4(), title="Halfway"),
    SaveDeleted(**OWN, save_id=uuid.uuid4()),
    SessionRestored(**OWN, turn_id=None, save_id=uuid.uuid4()),
    ScenarioUpserted(user_id=USER, scenario_id="moor", title="The Moor"),
    ScenarioDeleted(user_id=USER, scenario_id="moor"),
    SettingsChanged(user_id=USER, service="narrator", changes={"model": "m", "temperature": None}),
    DeadLetterRetried(user_id=USER, stream_seq=3, retried_as_seq=9),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_round_trip(event: object) -> None:
    assert parse_event(event.to_bytes()) == event  # type: ignore[attr-defined]


def test_session_events_are_on_the_session_and_admin_events_on_admin() -> None:
    for event in EVENTS[:5]:
        assert event.subject() == f"story.events.{SESSION}.{event.type}"
    for event in EVENTS[5:]:
        assert event.session_id == NO_SESSION
        assert event.subject() == f"story.events.admin.{event.type}"
    assert admin_filter() == "story.events.admin.>"
    # "Every session" filters match admin subjects too: persistence's story.events.> sees all.
    assert events_filter(event_type="scenario.upserted") == "story.events.*.scenario.upserted"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
    ],
)
def test_bad_titles_are_refused(payload: dict[str, str], message: str) -> None:
    data = {**EVENTS[0].model_dump(mode="json"), **payload}
    with pytest.raises(InvalidEvent, match=message):
        parse_event(data)


def test_a_scenario_id_is_a_slug() -> None:
    data = {**EVENTS[5].model_dump(mode="json"), "scenario_id": "a b.c"}
    with pytest.raises(InvalidEvent, match="scenario_id"):
        parse_event(data)
