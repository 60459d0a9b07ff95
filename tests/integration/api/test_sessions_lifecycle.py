"""Sessions through the real projection: start from a stored scenario, list mine, read one
with its history (paged), rename, delete — and other players' ids answer 404."""

from __future__ import annotations

import uuid

import pytest

from .persisted import Stack, admin, player, stack_fixture  # noqa: F401

pytestmark = pytest.mark.integration


async def test_a_session_starts_from_a_stored_scenario_or_the_bundled_default(
    stack: Stack,
) -> None:
    boss, alice = uuid.uuid4(), uuid.uuid4()
    scenario = {
        "scenario_id": "lighthouse",
        "title": "The Lighthouse",
        "opening": "Fog rolls in.",
        "scenario": {"world": "A rock in a cold sea.", "image_policy": "never"},
    }
    created = await stack.http.post("/api/admin/scenarios", json=scenario, headers=admin(boss))
    assert created.status_code == 201, created.text
    hidden = {**scenario, "scenario_id": "draft", "published": False}
    created = await stack.http.post("/api/admin/scenarios", json=hidden, headers=admin(boss))
    assert created.status_code == 201, created.text

    listed = await stack.http.get("/api/scenarios", headers=player(alice))
    assert [s["scenario_id"] for s in listed.json()] == ["default", "lighthouse"]

    session = await stack.start(alice, scenario_id="lighthouse")
    assert (session["scenario_id"], session["title"], session["opening"]) == (
        "lighthouse",
        "The Lighthouse",
        "Fog rolls in.",
    )
    state = await stack.db.fetchval(
        "SELECT story_state FROM story_sessions WHERE id = $1", uuid.UUID(session["session_id"])
    )
    assert '"A rock in a cold sea."' in state and '"never"' in state
    assert (await stack.start(alice))["scenario_id"] == "default"

    before = await stack.stream_size()
    for unknown in ("draft", "atlantis"):
        refused = await stack.http.post(
            "/api/sessions", json={"scenario_id": unknown}, headers=player(alice)
        )
        assert refused.status_code == 422 and unknown in refused.json()["detail"]
    assert await stack.stream_size() == before


async def test_my_sessions_newest_first_in_pages(stack: Stack) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    first = await stack.start(alice, title="First")
    second = await stack.start(alice, title="Second")
    await stack.start(bob, title="Bob's")
    await stack.narrate(first["session_id"], alice, "I wake up.")  # played last: first now

    page = await stack.http.get("/api/sessions?limit=1", headers=player(alice))
    assert page.status_code == 200
    body = page.json()
    assert [s["title"] for s in body["items"]] == ["First"]
    assert body["items"][0]["turn_count"] == 1 and body["next_offset"] == 1
    rest = (await stack.http.get("/api/sessions?limit=1&offset=1", headers=player(alice))).json()
    assert [s["session_id"] for s in rest["items"]] == [second["session_id"]]
    assert rest["next_offset"] is None

    for bad in ("limit=0", "limit=101", "offset=-1", "limit=x"):
        refused = await stack.http.get(f"/api/sessions?{bad}", headers=player(alice))
        assert refused.status_code == 422, bad
        problem = refused.json()
        assert problem["status"] == 422 and problem["errors"][0]["location"] == "query"
    assert (await stack.http.get("/api/sessions")).status_code == 401


async def test_a_session_with_its_history_in_pages(stack: Stack) -> None:
    alice = uuid.uuid4()
    session = await stack.start(alice)
    sid = session["session_id"]
    turns = [await stack.narrate(sid, alice, f"step {n}", image=(n == 3)) for n in range(1, 6)]

    read = await stack.http.get(f"/api/sessions/{sid}?history=2", headers=player(alice))
    assert read.status_code == 200, read.text
    detail = read.json()
    assert detail["turn_count"] == 5
    history = detail["history"]
    assert [t["text"] for t in history["items"]] == ["step 4", "step 5"]
    assert history["items"][1]["narration"] == "Narration of: step 5"
    assert history["next_before"] == 4
    older = await stack.http.get(history["older_url"], headers=player(alice))
    page = older.json()
    assert [t["seq"] for t in page["items"]] == [2, 3]
    [image] = page["items"][1]["images"]
    assert image["url"] == f"/api/images/{image['image_id']}"
    last = await stack.http.get(
        f"/api/sessions/{sid}/turns?before=2&limit=5", headers=player(alice)
    )
    assert [t["turn_id"] for t in last.json()["items"]] == [str(turns[0])]
    assert last.json()["next_before"] is None and last.json()["older_url"] is None

    stranger = player(uuid.uuid4())
    for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/turns"):
        assert (await stack.http.get(path, headers=stranger)).status_code == 404
    assert (await stack.http.get("/api/sessions/not-a-uuid", headers=stranger)).status_code == 422


async def test_rename_and_what_bad_input_changes(stack: Stack) -> None:
    alice = uuid.uuid4()
    sid = (await stack.start(alice, title="Old"))["session_id"]

    renamed = await stack.http.patch(
        f"/api/sessions/{sid}", json={"title": "  The \x07Ferry "}, headers=player(alice)
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "The Ferry"
    read = await stack.http.get(f"/api/sessions/{sid}", headers=player(alice))
    assert read.json()["title"] == "The Ferry"

    before = await stack.stream_size()
    for body in ({"title": " \x00 "}, {"title": "x" * 201}, {}, {"title": "ok", "more": 1}):
        refused = await stack.http.patch(f"/api/sessions/{sid}", json=body, headers=player(alice))
        assert refused.status_code == 422, body
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] in ("title", "more")
    other = await stack.http.patch(
        f"/api/sessions/{sid}", json={"title": "Mine"}, headers=player(uuid.uuid4())
    )
    assert other.status_code == 404
    same = await stack.http.patch(
        f"/api/sessions/{sid}", json={"title": "The Ferry"}, headers=player(alice)
    )
    assert same.status_code == 200
    assert await stack.stream_size() == before


async def test_delete_takes_everything_and_refuses_later_turns(stack: Stack) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sid = (await stack.start(alice))["session_id"]
    kept = (await stack.start(alice))["session_id"]
    turn = await stack.narrate(sid, alice, "I light the lamp.", image=True)
    image_id = await stack.db.fetchval("SELECT id FROM images WHERE turn_id = $1", turn)
    saved = await stack.http.post(
        "/api/story/save", json={"session_id": sid, "title": "Lamp lit"}, headers=player(alice)
    )
    assert saved.status_code == 201

    before = await stack.stream_size()
    assert (await stack.http.delete(f"/api/sessions/{sid}", headers=player(bob))).status_code == 404
    assert await stack.stream_size() == before

    deleted = await stack.http.delete(f"/api/sessions/{sid}", headers=player(alice))
    assert deleted.status_code == 204 and deleted.content == b""

    gone = [
        f"/api/sessions/{sid}",
        f"/api/sessions/{sid}/turns",
        f"/api/turns/{turn}",
        f"/api/images/{image_id}",
        f"/api/story/load?save_id={saved.json()['save_id']}",
    ]
    for path in gone:
        assert (await stack.http.get(path, headers=player(alice))).status_code == 404, path
    listed = (await stack.http.get("/api/sessions", headers=player(alice))).json()
    assert [s["session_id"] for s in listed["items"]] == [kept]
    saves = (await stack.http.get("/api/story/saves", headers=player(alice))).json()
    assert saves["items"] == []
    later = await stack.http.post(
        "/api/story/progress",
        json={"session_id": sid, "input_type": "action", "text": "Hello?"},
        headers=player(alice),
    )
    assert later.status_code == 404
    assert (
        await stack.http.delete(f"/api/sessions/{sid}", headers=player(alice))
    ).status_code == 404
    assert await stack.db.fetchval("SELECT count(*) FROM deleted_sessions") == 1
