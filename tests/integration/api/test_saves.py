"""Saves through the real projection: save where the story stands, list, load (the story
line goes back to the save), delete; other players' ids answer 404; bad input changes
nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taleforge.contracts import SessionRestored, TurnFailed, events_filter, parse_event

from .persisted import Stack, player, stack_fixture  # noqa: F401

pytestmark = pytest.mark.integration


async def save(stack: Stack, user: uuid.UUID, session_id: str, title: str) -> dict[str, Any]:
    response = await stack.http.post(
        "/api/story/save", json={"session_id": session_id, "title": title}, headers=player(user)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def story_texts(stack: Stack, user: uuid.UUID, session_id: str) -> list[str]:
    read = await stack.http.get(f"/api/sessions/{session_id}", headers=player(user))
    assert read.status_code == 200, read.text
    return [turn["text"] for turn in read.json()["history"]["items"]]


async def test_save_then_load_goes_back_to_the_save(stack: Stack) -> None:
    alice = uuid.uuid4()
    sid = (await stack.start(alice))["session_id"]
    at_start = await save(stack, alice, sid, "Before anything")
    assert (at_start["turn_id"], at_start["turn_seq"]) == (None, None)
    one = await stack.narrate(sid, alice, "one")
    await stack.narrate(sid, alice, "two")
    halfway = await save(stack, alice, sid, "  Halfway\n")
    assert (halfway["turn_seq"], halfway["title"]) == (2, "Halfway")
    await stack.narrate(sid, alice, "three")
    four = await stack.narrate(sid, alice, "four", complete=False)
    # A turn still being narrated: neither a save nor a load may race it.
    for busy in (
        stack.http.post(
            "/api/story/save", json={"session_id": sid, "title": "x"}, headers=player(alice)
        ),
        stack.http.get(f"/api/story/load?save_id={halfway['save_id']}", headers=player(alice)),
    ):
        refused = await busy
        assert refused.status_code == 409 and "in progress" in refused.json()["detail"]
    await stack.publish(
        TurnFailed(session_id=uuid.UUID(sid), user_id=alice, turn_id=four, code="x", reason="Lost.")
    )
    await stack.projected("SELECT true FROM turns WHERE id = $1 AND status = 'failed'", four)

    restores = await stack.js.subscribe(events_filter(sid, SessionRestored.TYPE))
    loaded = await stack.http.get(
        f"/api/story/load?save_id={halfway['save_id']}&history=10", headers=player(alice)
    )
    assert loaded.status_code == 200, loaded.text
    assert [t["text"] for t in loaded.json()["history"]["items"]] == ["one", "two"]
    event = parse_event((await restores.next_msg(timeout=5)).data)
    assert isinstance(event, SessionRestored)
    assert (str(event.turn_id), str(event.save_id)) == (halfway["turn_id"], halfway["save_id"])
    await restores.unsubscribe()

    # The story goes on from the save; the undone turns are still readable by id.
    await stack.narrate(sid, alice, "five")
    assert await story_texts(stack, alice, sid) == ["one", "two", "five"]
    parent = await stack.db.fetchval("SELECT parent_turn_id FROM turns WHERE input_text = 'five'")
    assert str(parent) == halfway["turn_id"]
    three = await stack.db.fetchval("SELECT id FROM turns WHERE input_text = 'three'")
    assert (await stack.http.get(f"/api/turns/{three}", headers=player(alice))).status_code == 200

    # Back to the very start, then to the save on the first branch.
    await stack.http.get(f"/api/story/load?save_id={at_start['save_id']}", headers=player(alice))
    assert await story_texts(stack, alice, sid) == []
    late = await save(stack, alice, sid, "Empty again")
    assert late["turn_id"] is None
    await stack.http.get(f"/api/story/load?save_id={halfway['save_id']}", headers=player(alice))
    assert await story_texts(stack, alice, sid) == ["one", "two"]
    lines = await stack.db.fetch("SELECT id FROM turns WHERE in_story ORDER BY seq")
    assert lines[0]["id"] == one


async def test_my_saves_newest_first_and_only_mine(stack: Stack) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    first = (await stack.start(alice))["session_id"]
    second = (await stack.start(alice))["session_id"]
    a = await save(stack, alice, first, "A")
    b = await save(stack, alice, second, "B")
    c = await save(stack, alice, first, "C")
    await save(stack, bob, (await stack.start(bob))["session_id"], "Bob's")

    mine = (await stack.http.get("/api/story/saves", headers=player(alice))).json()
    assert [s["save_id"] for s in mine["items"]] == [c["save_id"], b["save_id"], a["save_id"]]
    page = await stack.http.get(
        f"/api/story/saves?session_id={first}&limit=1", headers=player(alice)
    )
    assert [s["title"] for s in page.json()["items"]] == ["C"] and page.json()["next_offset"] == 1
    assert (
        await stack.http.get("/api/story/saves?limit=0", headers=player(alice))
    ).status_code == 422


async def test_save_load_and_delete_refuse_what_is_not_yours(stack: Stack) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sid = (await stack.start(alice))["session_id"]
    kept = await save(stack, alice, sid, "Kept")
    before = await stack.stream_size()

    as_bob = player(bob)
    refusals = [
        (
            await stack.http.post(
                "/api/story/save", json={"session_id": sid, "title": "x"}, headers=as_bob
            ),
            404,
        ),
        (await stack.http.get(f"/api/story/load?save_id={kept['save_id']}", headers=as_bob), 404),
        (await stack.http.delete(f"/api/story/saves/{kept['save_id']}", headers=as_bob), 404),
        (
            await stack.http.get(f"/api/story/load?save_id={uuid.uuid4()}", headers=player(alice)),
            404,
        ),
        (await stack.http.get("/api/story/load", headers=player(alice)), 422),
        (await stack.http.get("/api/story/load?save_id=nope", headers=player(alice)), 422),
    ]
    for body in (
        {"session_id": sid, "title": "\x00"},
        {"session_id": sid},
        {"session_id": "nope", "title": "x"},
        {"session_id": sid, "title": "x", "turn_id": str(uuid.uuid4())},
    ):
        refusals.append(
            (await stack.http.post("/api/story/save", json=body, headers=player(alice)), 422)
        )
    for response, status in refusals:
        assert response.status_code == status, response.text
        assert response.json()["status"] == status
    assert await stack.stream_size() == before

    deleted = await stack.http.delete(f"/api/story/saves/{kept['save_id']}", headers=player(alice))
    assert deleted.status_code == 204
    again = await stack.http.delete(f"/api/story/saves/{kept['save_id']}", headers=player(alice))
    assert again.status_code == 404
    assert (await stack.http.get("/api/story/saves", headers=player(alice))).json()["items"] == []
