"""`taleforge events`: a real session's timeline, by session, turn and time window; --follow;
and a plain answer (exit 3) when what is asked for has aged out of the stream."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import signal
import sys
import uuid
from typing import Any

import nats
import pytest

from taleforge.cli.events import Selection, parse_time, show
from taleforge.cli.replay.renarrate import ReplayReport, renarrate
from taleforge.cli.show_prompt import rebuild_prompt
from taleforge.cli.stream import AgedOut
from taleforge.contracts import InputType, TurnRequested
from taleforge.persistence.adapters.event_log import ensure_stream, story_stream_config

from .conftest import Log, Played, a_session, narrator_settings

pytestmark = pytest.mark.integration

# The scenario pictures every turn: the narrator asks for an image after each narration.
TURN_TYPES = ["turn.requested", "narration.started", "narration.completed", "image.requested"]


async def timeline(nats_url: str, selection: Selection) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = await show(nats_url, selection, as_json=True, out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_five_turn_session_in_order_with_types_gaps_and_turn_numbers(
    played: Played, nats_url: str
) -> None:
    code, rows = await timeline(nats_url, Selection(session=played.session_id))

    assert code == 0
    assert [r["type"] for r in rows] == ["session.started"] + TURN_TYPES * 5
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert rows[0]["gap_s"] is None and all(r["gap_s"] >= 0 for r in rows[1:])
    turn_ids = [str(t.turn_id) for t in played.turns]
    for number, turn_id in enumerate(turn_ids, start=1):
        of_turn = [r for r in rows if r.get("turn_id") == turn_id]
        assert [r["type"] for r in of_turn] == TURN_TYPES
        assert {r["turn_number"] for r in of_turn} == {number}
    completed = [r for r in rows if r["type"] == "narration.completed"]
    assert [r["text"] for r in completed] == [c.text for c in played.completions]

    text = io.StringIO()
    assert await show(nats_url, Selection(session=played.session_id), as_json=False, out=text) == 0
    lines = text.getvalue().splitlines()
    assert lines[0].split()[:4] == ["seq", "time", "(UTC)", "gap"]
    assert "session.started" in lines[1] and '"The Drowned Bell"' in lines[1]
    second = lines[2 + len(TURN_TYPES) :][: len(TURN_TYPES)]
    assert all(f"#2 {turn_ids[1][:8]}" in line for line in second)
    assert "turn.requested" in second[0] and 'action: "I light the lantern' in second[0]
    assert "narration.completed" in second[2] and "gpt-4.1-mini in " in second[2]


async def test_one_turn_and_a_time_window(played: Played, nats_url: str) -> None:
    third = played.turns[2]
    # Without --session the turn's session is found by a scan of the turn requests.
    code, rows = await timeline(nats_url, Selection(turn=third.turn_id))
    assert code == 0
    assert [r["type"] for r in rows] == TURN_TYPES
    assert {r["turn_id"] for r in rows} == {str(third.turn_id)}
    assert {r["turn_number"] for r in rows} == {3}

    _, everything = await timeline(nats_url, Selection(session=played.session_id))
    at = [parse_time(r["stored_at"]) for r in everything]
    # Half-way between events: stored times are rounded to microseconds.
    since, until = at[3] + (at[4] - at[3]) / 2, at[6] + (at[7] - at[6]) / 2
    code, window = await timeline(nats_url, Selection(since=since, until=until))
    assert code == 0
    assert [r["seq"] for r in window] == [r["seq"] for r in everything[4:7]]


async def test_follow_prints_a_new_event_and_stops_cleanly_on_ctrl_c(
    played: Played, log: Log, nats_url: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taleforge.cli",
        "events",
        "--session",
        str(played.session_id),
        "--follow",
        "--json",
        "--nats-url",
        nats_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            seen = [json.loads(await proc.stdout.readline()) for _ in range(21)]
            assert seen[-1]["type"] == "image.requested"
            turn = TurnRequested(
                session_id=played.session_id,
                user_id=played.session.user_id,
                turn_id=uuid.uuid4(),
                input_type=InputType.SPEECH,
                text="Is someone there?",
            )
            await log.publish(turn)
            new = json.loads(await proc.stdout.readline())
            assert new["type"] == "turn.requested" and new["turn_id"] == str(turn.turn_id)
            assert new["turn_number"] == 6
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            code = await proc.wait()
        stderr = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, stderr
    assert "Traceback" not in stderr and "stopped" in stderr


@pytest.fixture
async def tiny_stream(nats_url: str) -> Any:
    """A STORY stream that keeps only its 5 newest events."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, dataclasses.replace(story_stream_config(), max_msgs=5))
    yield js
    await nc.close()


async def test_what_aged_out_is_said_plainly(
    tiny_stream: Any, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session = a_session()
    turns = [
        TurnRequested(
            session_id=session.session_id,
            user_id=session.user_id,
            turn_id=uuid.uuid4(),
            input_type=InputType.ACTION,
            text=f"I ring the bell {n} times",
        )
        for n in range(8)
    ]
    for event in [session, *turns]:
        await tiny_stream.publish(event.subject(), event.to_bytes())

    code, rows = await timeline(nats_url, Selection(session=session.session_id))
    assert code == 3, "partly aged out is not a success"
    assert [r["turn_id"] for r in rows] == [str(t.turn_id) for t in turns[3:]]
    err = capsys.readouterr().err
    assert f"the start of session {session.session_id} aged out" in err
    assert "its events before seq 5 are gone" in err and "the oldest beyond 5 events" in err
    assert "turn_number" not in rows[0], "turn numbers are unknown without the start"

    code, rows = await timeline(nats_url, Selection(turn=turns[0].turn_id))
    assert (code, rows) == (3, [])
    assert f"turn {turns[0].turn_id} is not in the stream; it may have aged out" in (
        capsys.readouterr().err
    )

    code, rows = await timeline(nats_url, Selection(since=parse_time("1h")))
    assert code == 3 and len(rows) == 5
    assert "may have aged out" in capsys.readouterr().err

    code, rows = await timeline(nats_url, Selection(since=parse_time("2h"), until=parse_time("1h")))
    assert (code, rows) == (3, [])
    assert "the whole window aged out" in capsys.readouterr().err

    with pytest.raises(AgedOut, match="aged out"):
        await rebuild_prompt(nats_url, turns[-1].turn_id)
    with pytest.raises(AgedOut, match="aged out"):
        report = ReplayReport(session.session_id, "t", 1, None, None)
        await renarrate(
            nats_url,
            session.session_id,
            report,
            settings=narrator_settings(nats_url, "http://127.0.0.1:9"),
            progress=False,
        )

    # The command itself: exit code 3 and the reason, not "no events".
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taleforge.cli",
        "show-prompt",
        str(turns[-1].turn_id),
        "--nats-url",
        nats_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 3, stderr
    assert b"aged out" in stderr and stdout == b""
