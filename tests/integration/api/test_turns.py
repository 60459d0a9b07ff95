"""GET /api/turns/{id} reflects what persistence recorded, for the turn's owner only."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


async def test_a_pending_turn(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    turn_id = await api.rows.turn(session_id, player, input_type="action", input_text="I wait.")

    response = await api.http.get(f"/api/turns/{turn_id}", headers=api.auth(player))

    assert response.status_code == 200
    turn = response.json()
    assert turn["turn_id"] == str(turn_id) and turn["session_id"] == str(session_id)
    assert (turn["seq"], turn["input_type"], turn["text"]) == (1, "action", "I wait.")
    assert turn["status"] == "pending"
    assert turn["narration"] is None and turn["error"] is None and turn["images"] == []


async def test_a_completed_turn_with_usage_and_images(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    turn_id = await api.rows.turn(
        session_id,
        player,
        status="completed",
        narration="The lantern flares.",
        model="gpt-test",
        input_tokens=120,
        cached_tokens=100,
        output_tokens=30,
        reasoning_tokens=5,
        total_tokens=150,
    )
    done = await api.rows.image(turn_id, player, status="completed", sha256="0" * 64)
    failed = await api.rows.image(
        turn_id, player, kind="portrait", status="failed", error="the painter gave up"
    )

    turn = (await api.http.get(f"/api/turns/{turn_id}", headers=api.auth(player))).json()

    assert turn["status"] == "completed" and turn["narration"] == "The lantern flares."
    assert turn["model"] == "gpt-test"
    assert turn["usage"] == {
        "input_tokens": 120,
        "cached_tokens": 100,
        "output_tokens": 30,
        "reasoning_tokens": 5,
        "total_tokens": 150,
    }
    by_id = {image["image_id"]: image for image in turn["images"]}
    assert by_id[str(done)] == {
        "image_id": str(done),
        "kind": "scene",
        "status": "completed",
        "url": f"/api/images/{done}",
        "error": None,
    }
    assert by_id[str(failed)]["status"] == "failed"
    assert by_id[str(failed)]["url"] is None
    assert by_id[str(failed)]["error"] == "the painter gave up"


async def test_a_failed_turn_says_why(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    turn_id = await api.rows.turn(
        session_id,
        player,
        status="failed",
        error_code="provider_auth",
        error="The narrator is unavailable.",
    )

    turn = (await api.http.get(f"/api/turns/{turn_id}", headers=api.auth(player))).json()

    assert turn["status"] == "failed" and turn["error"] == "The narrator is unavailable."
    assert turn["narration"] is None


async def test_another_players_turn_is_404(api) -> None:  # type: ignore[no-untyped-def]
    owner = uuid.uuid4()
    session_id = await api.rows.session(owner)
    turn_id = await api.rows.turn(session_id, owner, status="completed", narration="Secret.")

    response = await api.http.get(f"/api/turns/{turn_id}", headers=api.auth(uuid.uuid4()))
    unknown = await api.http.get(f"/api/turns/{uuid.uuid4()}", headers=api.auth(owner))

    assert response.status_code == unknown.status_code == 404
    assert response.json()["title"] == unknown.json()["title"] == "Not Found"
    assert "Secret" not in response.text
