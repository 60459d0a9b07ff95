"""Admin endpoints through the real projection: only admins get in (403 for players),
scenarios, live settings the narrator and illustrator pick up, users with their usage, and
dead letters listed and retried."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from taleforge.contracts import SessionStarted, TurnRequested, event_subject
from taleforge.illustrator.templates import TemplateRegistry
from taleforge.illustrator.workflows import BUILTIN_PLACEHOLDERS, load_template
from taleforge.narrator.adapters.session_store import open_bucket
from taleforge.narrator.adapters.settings_kv import KvSettings
from taleforge.narrator.live_settings import LiveSettings

from .persisted import Stack, admin, player, stack_fixture, wait_until  # noqa: F401

pytestmark = pytest.mark.integration

BOSS = uuid.uuid4()

ADMIN_CALLS = [
    ("GET", "/api/admin/scenarios", None),
    ("POST", "/api/admin/scenarios", {"scenario_id": "x", "title": "X"}),
    ("GET", "/api/admin/scenarios/x", None),
    ("PUT", "/api/admin/scenarios/x", {"title": "X"}),
    ("DELETE", "/api/admin/scenarios/x", None),
    ("GET", "/api/admin/settings/narrator", None),
    ("PATCH", "/api/admin/settings/narrator", {"model": "m"}),
    ("GET", "/api/admin/settings/illustrator", None),
    ("PUT", "/api/admin/settings/illustrator/templates/scene", {"workflow": {}}),
    ("DELETE", "/api/admin/settings/illustrator/templates/scene", None),
    ("GET", "/api/admin/settings/history", None),
    ("GET", "/api/admin/users", None),
    ("GET", f"/api/admin/users/{uuid.uuid4()}/usage", None),
    ("GET", "/api/admin/dead-letters", None),
    ("POST", "/api/admin/dead-letters/1/retry", None),
]


async def call(stack: Stack, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await stack.http.request(method, path, json=body, headers=headers)


async def test_players_get_403_and_strangers_401_and_nothing_changes(stack: Stack) -> None:
    before = await stack.stream_size()
    for method, path, body in ADMIN_CALLS:
        refused = await call(stack, method, path, body, player(uuid.uuid4()))
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["status"] == 403
        anonymous = await call(stack, method, path, body, {})
        assert anonymous.status_code == 401, (method, path)
    assert await stack.stream_size() == before


async def test_scenarios_created_replaced_listed_and_deleted(stack: Stack) -> None:
    boss = admin(BOSS)
    body = {
        "scenario_id": "moor",
        "title": "The Moor",
        "summary": "Fog and bog.",
        "opening": "The path sinks.",
        "scenario": {"world": "A wet moor.", "rules": ["No fires."], "image_policy": "never"},
        "published": False,
    }
    created = await stack.http.post("/api/admin/scenarios", json=body, headers=boss)
    assert created.status_code == 201, created.text
    scenario = created.json()
    assert scenario["scenario"]["rules"] == ["No fires."] and scenario["published"] is False
    duplicate = await stack.http.post("/api/admin/scenarios", json=body, headers=boss)
    assert duplicate.status_code == 409

    before = await stack.stream_size()
    for bad in (
        {**body, "scenario_id": "has space"},
        {**body, "title": ""},
        {**body, "scenario": {"world": "x", "surprise": 1}},
        {**body, "scenario": {"image_policy": "sometimes"}},
        {**body, "opening": "NUL \x00 cannot be stored"},
        {**body, "scenario": {"rules": ["a lone \ud800 surrogate"]}},
    ):
        # As JSON text: the lone surrogate travels escaped, as a client would send it.
        refused = await stack.http.post(
            "/api/admin/scenarios",
            content=json.dumps(bad),
            headers={**boss, "Content-Type": "application/json"},
        )
        assert refused.status_code == 422, bad
    with_id = await stack.http.put("/api/admin/scenarios/moor", json=body, headers=boss)
    assert with_id.status_code == 422  # the id is the path's; the body may not carry one
    replace = {k: v for k, v in body.items() if k != "scenario_id"}
    missing = await stack.http.put("/api/admin/scenarios/nope", json=replace, headers=boss)
    assert missing.status_code == 404
    assert await stack.stream_size() == before

    replaced = await stack.http.put(
        "/api/admin/scenarios/moor", json={**replace, "published": True}, headers=boss
    )
    assert replaced.status_code == 200 and replaced.json()["published"] is True
    assert replaced.json()["created_at"] == scenario["created_at"]
    listed = (await stack.http.get("/api/admin/scenarios", headers=boss)).json()
    assert [s["scenario_id"] for s in listed] == ["moor"]
    assert (await stack.http.get("/api/admin/scenarios/moor", headers=boss)).status_code == 200

    deleted = await stack.http.delete("/api/admin/scenarios/moor", headers=boss)
    assert deleted.status_code == 204
    for method in ("GET", "DELETE"):
        gone = await stack.http.request(method, "/api/admin/scenarios/moor", headers=boss)
        assert gone.status_code == 404


async def test_narrator_settings_change_live_and_are_recorded(stack: Stack) -> None:
    boss = admin(BOSS)
    # The narrator's own watcher on its bucket, as the running service has it.
    defaults = LiveSettings(
        model="gpt-default",
        max_output_tokens=400,
        context_budget_tokens=6000,
        summary_model="s",
        summary_max_output_tokens=300,
    )
    narrator = KvSettings(await open_bucket(stack.js, "narrator-settings"), defaults)
    await narrator.start()
    try:
        empty = await stack.http.get("/api/admin/settings/narrator", headers=boss)
        assert empty.status_code == 200 and empty.json()["overrides"] == {}

        changed = await stack.http.patch(
            "/api/admin/settings/narrator",
            json={"model": "gpt-live", "temperature": 0.3, "image_policy": "never"},
            headers=boss,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["overrides"] == {
            "model": "gpt-live",
            "temperature": "0.3",
            "image_policy": "never",
        }
        live = await narrator.current()
        assert (live.model, live.temperature, live.image_policy) == ("gpt-live", 0.3, "never")

        reset = await stack.http.patch(
            "/api/admin/settings/narrator", json={"model": None}, headers=boss
        )
        assert "model" not in reset.json()["overrides"]
        assert (await narrator.current()).model == "gpt-default"

        before = await stack.stream_size()
        for bad in ({}, {"temperature": 5}, {"max_output_tokens": 1}, {"model": ""}, {"x": 1}):
            refused = await stack.http.patch("/api/admin/settings/narrator", json=bad, headers=boss)
            assert refused.status_code == 422, bad
        assert await stack.stream_size() == before
        assert (await narrator.current()).temperature == 0.3

        history = await wait_until(lambda: _history(stack, "narrator", boss, count=2), timeout=20)
        assert [h["changes"] for h in history] == [
            {"model": None},
            {"model": "gpt-live", "temperature": "0.3", "image_policy": "never"},
        ]
        assert {h["changed_by"] for h in history} == {str(BOSS)}
    finally:
        await narrator.stop()


async def _history(stack: Stack, service: str, headers: dict[str, str], count: int) -> Any:
    response = await stack.http.get(
        f"/api/admin/settings/history?service={service}", headers=headers
    )
    items = response.json()
    return items if len(items) == count else None


async def test_illustrator_templates_registered_live_and_back_to_shipped(stack: Stack) -> None:
    boss = admin(BOSS)
    registry = await TemplateRegistry.open(stack.js, BUILTIN_PLACEHOLDERS)
    shipped = (await stack.http.get("/api/admin/settings/illustrator", headers=boss)).json()
    assert {t["kind"]: t["version"] for t in shipped["templates"]} == {"scene": 0, "portrait": 0}

    workflow = load_template("scene")
    workflow["3"]["inputs"]["steps"] = 7
    put = await stack.http.put(
        "/api/admin/settings/illustrator/templates/scene",
        json={"workflow": workflow},
        headers=boss,
    )
    assert put.status_code == 200, put.text
    [scene] = [t for t in put.json()["templates"] if t["kind"] == "scene"]
    assert scene["source"] == "registered" and scene["version"] > 0
    used = await registry.get("scene")  # what the illustrator renders the next image with
    assert used.version == scene["version"] and used.workflow["3"]["inputs"]["steps"] == 7

    before = await stack.stream_size()
    for kind, bad in (
        ("scene", {"workflow": {}}),
        ("scene", {"workflow": {"1": {"inputs": {}}}}),
        ("scene", {"workflow": {"1": {"class_type": "X", "inputs": {}}}, "extra": 1}),
        ("comic", {"workflow": workflow}),
    ):
        refused = await stack.http.put(
            f"/api/admin/settings/illustrator/templates/{kind}", json=bad, headers=boss
        )
        assert refused.status_code == 422, (kind, bad)
    assert await stack.stream_size() == before

    back = await stack.http.delete("/api/admin/settings/illustrator/templates/scene", headers=boss)
    assert back.status_code == 200
    assert (await registry.get("scene")).version == 0
    again = await stack.http.delete("/api/admin/settings/illustrator/templates/scene", headers=boss)
    assert again.status_code == 404
    history = await wait_until(lambda: _history(stack, "illustrator", boss, count=2))
    assert history[0]["changes"] == {"scene": None}
    assert json.loads(history[1]["changes"]["scene"]) == workflow


async def test_users_with_their_usage(stack: Stack) -> None:
    boss = admin(BOSS)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sid = (await stack.start(alice))["session_id"]
    await stack.narrate(sid, alice, "one")
    await stack.narrate(sid, alice, "two")
    await stack.start(bob)

    page = await stack.http.get("/api/admin/users?days=7", headers=boss)
    assert page.status_code == 200, page.text
    users = {u["user_id"]: u for u in page.json()["items"]}
    assert users[str(alice)]["sessions"] == 1
    assert (users[str(alice)]["completed_turns"], users[str(alice)]["total_tokens"]) == (2, 30)
    assert float(users[str(alice)]["cost_usd"]) == pytest.approx(0.02)
    assert (users[str(bob)]["sessions"], users[str(bob)]["total_tokens"]) == (1, 0)

    days = await stack.http.get(f"/api/admin/users/{alice}/usage", headers=boss)
    [today] = days.json()
    assert (today["completed_turns"], today["output_tokens"]) == (2, 10)
    unknown = await stack.http.get(f"/api/admin/users/{uuid.uuid4()}/usage", headers=boss)
    assert unknown.status_code == 404
    for bad in ("days=0", "days=367", "limit=0"):
        assert (await stack.http.get(f"/api/admin/users?{bad}", headers=boss)).status_code == 422


async def test_a_dead_letter_is_listed_and_retried_once_its_cause_is_fixed(
    stack: Stack,
) -> None:
    boss = admin(BOSS)
    alice, sid = uuid.uuid4(), uuid.uuid4()
    # A turn whose session persistence has not seen: rejected and dead-lettered.
    early = TurnRequested(
        session_id=sid, user_id=alice, turn_id=uuid.uuid4(), input_type="continue"
    )
    seq = await stack.publish(early)
    await stack.projected("SELECT true FROM dead_letters WHERE stream_seq = $1", seq)
    await stack.js.publish(event_subject(sid, "turn.requested"), b"{not json")

    listed = await stack.http.get("/api/admin/dead-letters", headers=boss)
    assert listed.status_code == 200
    letters = await wait_until(lambda: _dead_letters(stack, boss, count=2), timeout=20)
    assert letters[1]["stream_seq"] == seq and "unknown session" in letters[1]["reason"]

    # The cause is fixed (the session now exists); the retry applies the same message.
    await stack.publish(
        SessionStarted(session_id=sid, user_id=alice, scenario_id="default", title="Late")
    )
    retried = await stack.http.post(f"/api/admin/dead-letters/{seq}/retry", headers=boss)
    assert retried.status_code == 202, retried.text
    copy = retried.json()["retried_as_seq"]
    assert copy > seq
    await stack.projected("SELECT true FROM turns WHERE id = $1", early.turn_id)
    letter = await stack.projected(
        "SELECT retried_as_seq FROM dead_letters WHERE stream_seq = $1 AND retry_count = 1", seq
    )
    assert letter == copy

    for missing in (999_999, 0):
        answer = await stack.http.post(f"/api/admin/dead-letters/{missing}/retry", headers=boss)
        assert answer.status_code == (404 if missing else 422)


async def _dead_letters(stack: Stack, headers: dict[str, str], count: int) -> Any:
    items = (await stack.http.get("/api/admin/dead-letters", headers=headers)).json()["items"]
    return items if len(items) == count else None


async def test_the_admin_reader_sees_every_row_and_changes_none(
    stack: Stack, migrated_database_url: str
) -> None:
    alice = uuid.uuid4()
    await stack.start(alice)
    conn = await asyncpg.connect(migrated_database_url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE taleforge_admin_read")
            assert await conn.fetchval("SELECT count(*) FROM story_sessions") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE story_sessions SET title = 'x'")
        async with conn.transaction():
            # Players are as they were: no claims, no rows.
            await conn.execute("SET LOCAL ROLE authenticated")
            assert await conn.fetchval("SELECT count(*) FROM story_sessions") == 0
    finally:
        await conn.close()
