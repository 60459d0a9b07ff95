"""POST /api/sessions publishes SessionStarted and waits for the projected row."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from taleforge.contracts import SessionStarted, events_filter, parse_event

pytestmark = pytest.mark.integration


async def _project_sessions(api, count: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Play persistence: insert a row for each SessionStarted seen on the stream."""
    sub = await api.js.subscribe(events_filter(event_type=SessionStarted.TYPE))
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=5)
            event = parse_event(msg.data)
            assert isinstance(event, SessionStarted)
            await api.rows.session(
                event.user_id,
                id=event.session_id,
                scenario_id=event.scenario_id,
                title=event.title,
                opening=event.opening,
            )
    finally:
        await sub.unsubscribe()


async def test_a_session_is_created_once_it_is_readable(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    projector = asyncio.create_task(_project_sessions(api))
    await asyncio.sleep(0)  # let the subscription start before the event exists

    response = await api.http.post("/api/sessions", headers=api.auth(player))
    await projector

    assert response.status_code == 201, response.text
    session = response.json()
    assert session["scenario_id"] == "default" and session["title"] and session["opening"]
    assert session["created_at"]
    read = await api.http.get(f"/api/sessions/{session['session_id']}", headers=api.auth(player))
    assert read.status_code == 200
    assert read.json() == {
        **session,
        "history": {"items": [], "next_before": None, "older_url": None},
    }
    stranger = await api.http.get(
        f"/api/sessions/{session['session_id']}", headers=api.auth(uuid.uuid4())
    )
    assert stranger.status_code == 404


async def test_a_session_not_projected_in_time_is_202(api) -> None:  # type: ignore[no-untyped-def]
    api.app.state.settings.session_visible_timeout_s = 0.1
    player = uuid.uuid4()
    before = await api.stream_size()

    response = await api.http.post(
        "/api/sessions", json={"title": " My\x00 tale "}, headers=api.auth(player)
    )

    assert response.status_code == 202
    assert response.json()["title"] == "My tale"
    assert await api.stream_size() == before + 1


async def test_an_unknown_scenario_publishes_nothing(api) -> None:  # type: ignore[no-untyped-def]
    before = await api.stream_size()
    response = await api.http.post(
        "/api/sessions", json={"scenario_id": "atlantis"}, headers=api.auth(uuid.uuid4())
    )
    assert response.status_code == 422 and "atlantis" in response.json()["detail"]
    assert await api.stream_size() == before
