"""POST /api/story/progress on real JetStream: one TurnRequested per accepted turn, none else."""

from __future__ import annotations

import uuid

import pytest

from taleforge.contracts import MSG_ID_HEADER, STREAM_NAME, TurnRequested, parse_event
from taleforge.contracts.events import MAX_INPUT_CHARS

pytestmark = pytest.mark.integration


async def test_an_accepted_turn_is_one_turn_requested_on_the_stream(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    before = await api.stream_size()

    response = await api.http.post(
        "/api/story/progress",
        json={
            "session_id": str(session_id),
            "input_type": "speech",
            "text": " Caf\u0065\u0301?\x07 ",
        },
        headers={**api.auth(player), "Prefer": "respond-async"},
    )

    assert response.status_code == 202, response.text
    accepted = response.json()
    turn_id = accepted["turn_id"]
    assert accepted == {
        "turn_id": turn_id,
        "session_id": str(session_id),
        "status": "pending",
        "status_url": f"/api/turns/{turn_id}",
        "events_url": f"/api/turns/{turn_id}/events?last_event_id={before + 1}-0-0-0",
    }
    assert await api.stream_size() == before + 1
    msg = await api.js.get_last_msg(STREAM_NAME, f"story.events.{session_id}.turn.requested")
    event = parse_event(msg.data)
    assert isinstance(event, TurnRequested)
    assert str(event.turn_id) == turn_id and event.session_id == session_id
    assert event.user_id == player
    assert event.input_type == "speech" and event.text == "Caf\u00e9?"
    assert msg.headers is not None and msg.headers[MSG_ID_HEADER] == str(event.event_id)

    # Until persistence records it the poller gets 404 (from any replica alike); then "pending".
    unrecorded = await api.http.get(accepted["status_url"], headers=api.auth(player))
    assert unrecorded.status_code == 404
    await api.rows.turn(session_id, player, id=event.turn_id, input_text=event.text)
    polled = await api.http.get(accepted["status_url"], headers=api.auth(player))
    assert polled.status_code == 200
    assert polled.json()["status"] == "pending" and polled.json()["text"] == "Caf\u00e9?"
    stranger = await api.http.get(accepted["status_url"], headers=api.auth(uuid.uuid4()))
    assert stranger.status_code == 404


async def test_a_retry_with_the_same_idempotency_key_is_stored_once(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    before = await api.stream_size()
    body = {"session_id": str(session_id), "input_type": "continue"}
    headers = {**api.auth(player), "Idempotency-Key": "click-1", "Prefer": "respond-async"}

    first = await api.http.post("/api/story/progress", json=body, headers=headers)
    again = await api.http.post("/api/story/progress", json=body, headers=headers)

    assert first.status_code == again.status_code == 202
    assert first.json()["turn_id"] == again.json()["turn_id"]
    assert await api.stream_size() == before + 1


@pytest.mark.parametrize(
    ("body_of", "status", "says"),
    [
        (lambda s: {"session_id": s, "input_type": "shout", "text": "hi"}, 422, "input_type"),
        (
            lambda s: {
                "session_id": s,
                "input_type": "speech",
                "text": "x" * (MAX_INPUT_CHARS + 1),
            },
            422,
            "text",
        ),
        (lambda s: {"session_id": s, "input_type": "action", "text": "\x00 "}, 422, "text"),
        (
            lambda s: {"session_id": str(uuid.uuid4()), "input_type": "speech", "text": "hi"},
            404,
            "session",
        ),
    ],
    ids=["unknown-input-type", "too-long", "empty-action", "missing-session"],
)
async def test_bad_input_is_a_problem_and_publishes_nothing(api, body_of, status, says) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    before = await api.stream_size()

    response = await api.http.post(
        "/api/story/progress", json=body_of(str(session_id)), headers=api.auth(player)
    )

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status and says in response.json()["detail"]
    assert await api.stream_size() == before


async def test_another_players_session_is_404_and_publishes_nothing(api) -> None:  # type: ignore[no-untyped-def]
    owner = uuid.uuid4()
    session_id = await api.rows.session(owner)
    before = await api.stream_size()

    response = await api.http.post(
        "/api/story/progress",
        json={"session_id": str(session_id), "input_type": "speech", "text": "Mine now."},
        headers=api.auth(uuid.uuid4()),
    )

    assert response.status_code == 404
    assert await api.stream_size() == before


async def test_a_missing_stream_is_a_503_problem(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    await api.js.delete_stream(STREAM_NAME)

    response = await api.http.post(
        "/api/story/progress",
        json={"session_id": str(session_id), "input_type": "continue"},
        headers=api.auth(player),
    )

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "NATS" in response.json()["detail"]
