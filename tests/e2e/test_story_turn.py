"""One story session through all four services, as a player plays it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from PIL import Image

from taleforge.cli.dev import DevStack
from taleforge.cli.tokens import mint_token
from taleforge.contracts import STREAM_NAME, TurnRequested, parse_event
from taleforge.narrator.prompting import build_prompt
from taleforge.sandboxes.openai import deterministic_reply

from ..support import asyncpg_dsn

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def auth(user_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user_id)}"}


async def wait_for_turn(http: httpx.AsyncClient, turn_id: str, timeout: float = 30) -> Any:
    """Poll until the turn is final and none of its images is pending."""
    deadline = time.monotonic() + timeout
    turn: Any = None
    while time.monotonic() < deadline:
        response = await http.get(f"/api/turns/{turn_id}")
        if response.status_code == 200:
            turn = response.json()
            images_done = turn["images"] and all(i["status"] != "pending" for i in turn["images"])
            if turn["status"] == "failed" or (turn["status"] == "completed" and images_done):
                return turn
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn_id} did not finish in {timeout}s: {turn}")


async def read_stream(nats_url: str) -> list[Any]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM_NAME)
        events = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM_NAME, seq)
            assert msg.headers and msg.headers.get("Nats-Msg-Id"), "every event has a Nats-Msg-Id"
            event = parse_event(msg.data)
            assert msg.headers["Nats-Msg-Id"] == str(event.event_id)
            assert msg.subject == event.subject()
            events.append(event)
        return events
    finally:
        await nc.close()


async def test_two_turns_through_every_service(stack: DevStack) -> None:
    player = uuid.uuid4()
    async with httpx.AsyncClient(base_url=stack.api_url, headers=auth(player), timeout=30) as http:
        created = await http.post("/api/sessions", json={})
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]

        inputs = [("speech", "Hello? Is anyone there?"), ("action", "I light the lantern.")]
        turns = []
        for input_type, text in inputs:
            accepted = await http.post(
                "/api/story/progress",
                json={"session_id": session_id, "input_type": input_type, "text": text},
                headers={"Prefer": "respond-async"},  # 202 at once; the turn is polled below
            )
            assert accepted.status_code == 202, accepted.text
            turns.append(await wait_for_turn(http, accepted.json()["turn_id"]))

        # The API's view: both turns narrated, in order, each with a finished scene image.
        assert [t["seq"] for t in turns] == [1, 2]
        assert [t["status"] for t in turns] == ["completed", "completed"]
        for turn, (input_type, text) in zip(turns, inputs, strict=True):
            assert turn["input_type"] == input_type and turn["text"] == text
            assert turn["narration"], turn
            assert turn["usage"]["output_tokens"] > 0
            assert [i["status"] for i in turn["images"]] == ["completed"]

        # The image, served by the API, is a real PNG.
        image = turns[1]["images"][0]
        served = await http.get(image["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert served.content.startswith(PNG_SIGNATURE)
        Image.open(io.BytesIO(served.content)).verify()
        assert served.headers["etag"].strip('"') == hashlib.sha256(served.content).hexdigest()

        # Another player sees none of it.
        stranger = auth(uuid.uuid4())
        assert (
            await http.get(f"/api/turns/{turns[0]['turn_id']}", headers=stranger)
        ).status_code == 404
        assert (await http.get(image["url"], headers=stranger)).status_code == 404

    # The sandbox wrote the narration: the narrator called it once per turn, no more.
    async with httpx.AsyncClient(base_url=stack.openai_base_url.removesuffix("/v1")) as sandbox:
        seen = (await sandbox.get("/_sandbox/requests")).json()
    calls = [r for r in seen if r["path"].endswith("/responses")]
    assert len(calls) == 2
    for call, (_, text) in zip(calls, inputs, strict=True):
        assert text in json.dumps(call["body"]), "the player's input reached the model"

    # The database holds exactly the two turns, as narrated.
    conn = await asyncpg.connect(asyncpg_dsn(stack.database_url))
    try:
        rows = await conn.fetch(
            "SELECT seq, status, narration FROM turns WHERE session_id = $1 ORDER BY seq",
            uuid.UUID(session_id),
        )
    finally:
        await conn.close()
    assert [(r["seq"], r["status"]) for r in rows] == [(1, "completed"), (2, "completed")]
    assert [r["narration"] for r in rows] == [t["narration"] for t in turns]

    # The event log: every event exactly once, in life-cycle order per turn.
    events = [e for e in await read_stream(stack.nats_url) if str(e.session_id) == session_id]
    assert len({e.event_id for e in events}) == len(events), "no event stored twice"
    assert Counter(e.type for e in events) == {
        "session.started": 1,
        "turn.requested": 2,
        "narration.started": 2,
        "narration.completed": 2,
        "image.requested": 2,
        "image.completed": 2,
    }
    for turn in turns:
        mine = [e.type for e in events if str(e.turn_id) == turn["turn_id"]]
        assert mine == [
            "turn.requested",
            "narration.started",
            "narration.completed",
            "image.requested",
            "image.completed",
        ]
        completed = next(
            e
            for e in events
            if e.type == "narration.completed" and str(e.turn_id) == turn["turn_id"]
        )
        assert completed.text == turn["narration"]
        assert str(completed.user_id) == str(player)
        # ...and it is exactly what the sandbox writes for this input.
        requested = next(
            e for e in events if e.type == "turn.requested" and str(e.turn_id) == turn["turn_id"]
        )
        assert isinstance(requested, TurnRequested)
        assert completed.text == deterministic_reply(build_prompt(requested).player_text)

    # `taleforge events` shows the same log, in the same order.
    timeline = await taleforge_cli(
        "events", "--session", session_id, "--nats-url", stack.nats_url, "--json"
    )
    assert [json.loads(line)["event_id"] for line in timeline.splitlines()] == [
        str(e.event_id) for e in events
    ]


async def taleforge_cli(*args: str, expect_code: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taleforge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == expect_code, out.decode()
    return out.decode()


async def test_events_of_an_unknown_session_say_so(stack: DevStack) -> None:
    unknown = str(uuid.uuid4())
    out = await taleforge_cli(
        "events", "--session", unknown, "--nats-url", stack.nats_url, expect_code=1
    )
    assert f"no events for session {unknown}" in out


async def test_bad_input_is_refused_and_publishes_nothing(stack: DevStack) -> None:
    async def stream_size() -> int:
        nc = await nats.connect(stack.nats_url)
        try:
            return (await nc.jetstream().stream_info(STREAM_NAME)).state.messages
        finally:
            await nc.close()

    before = await stream_size()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
        no_token = await http.post("/api/sessions", json={})
        assert no_token.status_code == 401
        assert no_token.json()["status"] == 401
        bad = await http.post(
            "/api/story/progress",
            headers=auth(uuid.uuid4()),
            json={"session_id": str(uuid.uuid4()), "input_type": "shout", "text": "hi"},
        )
        assert bad.status_code == 422
        assert "input_type" in json.dumps(bad.json())
        missing = await http.post(
            "/api/story/progress",
            headers=auth(uuid.uuid4()),
            json={"session_id": str(uuid.uuid4()), "input_type": "speech", "text": "hi"},
        )
        assert missing.status_code == 404
    assert await stream_size() == before
