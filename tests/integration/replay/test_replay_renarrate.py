"""`taleforge replay --renarrate`: the narrator re-tells a recorded session on another model in
a scratch space — nothing on story.>, no KV write, no new stream message, no database row —
and both versions are reported with tokens and cost. Also `--rebuild` and Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from faststream import TestApp

from taleforge.cli.replay.renarrate import ReplayReport, renarrate
from taleforge.cli.replay.render import footer, side_by_side
from taleforge.cli.show_prompt import rebuild_prompt
from taleforge.contracts import STREAM_NAME, InputType, SessionRestored
from taleforge.narrator.history import Check
from taleforge.narrator.pricing import DEFAULT_PRICES, cost_usd
from taleforge.persistence.app import create_app as create_persistence
from taleforge.persistence.settings import Settings as PersistenceSettings
from taleforge.sandboxes.openai import OpenAISandboxConfig
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

from ...support import asyncpg_dsn
from .conftest import (
    INPUTS,
    Log,
    Narrators,
    Played,
    narrations_sent,
    narrator_settings,
    play,
    sandbox_requests,
)

pytestmark = pytest.mark.integration


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return {
            t["tablename"]: await conn.fetchval(f'SELECT count(*) FROM "{t["tablename"]}"')
            for t in tables
        }
    finally:
        await conn.close()


class Watch:
    """Everything published on core NATS under some subjects (stream publishes included)."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def on(self, msg: Any) -> None:
        self.subjects.append(msg.subject)


@pytest.fixture
async def persistence(nats_url: str, database_url: str) -> AsyncIterator[str]:
    settings = PersistenceSettings(
        nats_url=nats_url, database_url=database_url, persistence_startup_timeout_s=30
    )
    async with TestApp(create_persistence(settings)):
        yield database_url


async def test_renarrating_on_another_model_changes_nothing_live_and_reports_both(
    played: Played, sandbox: str, nats_url: str, persistence: str
) -> None:
    async with asyncio.timeout(60):  # the live projection has caught up with the session
        while (await row_counts(persistence)).get("turns", 0) < 5:
            await asyncio.sleep(0.1)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    before_rows = await row_counts(persistence)
    before_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
    live, kv, scratch = Watch(), Watch(), Watch()
    await nc.subscribe("story.>", cb=live.on)
    await nc.subscribe("$KV.>", cb=kv.on)
    await nc.subscribe("replay.>", cb=scratch.on)
    already_sent = len(sandbox_requests(sandbox))

    report = ReplayReport(played.session_id, "test1", 1, "gpt-4.1", None)
    await renarrate(
        nats_url,
        played.session_id,
        report,
        settings=narrator_settings(nats_url, sandbox),
        progress=False,
    )
    await nc.flush()
    await asyncio.sleep(0.2)  # let persistence see anything there might have been

    assert live.subjects == [] and kv.subjects == []
    assert (await js.stream_info(STREAM_NAME)).state.last_seq == before_seq
    assert await row_counts(persistence) == before_rows
    assert f"replay.test1.events.{played.session_id}.narration.completed" in scratch.subjects
    await nc.close()

    requests = sandbox_requests(sandbox)[already_sent:]
    assert [r["body"]["model"] for r in requests] == ["gpt-4.1"] * 5
    assert [c.number for c in report.turns] == [1, 2, 3, 4, 5]
    for comparison, original in zip(report.turns, played.completions, strict=True):
        assert comparison.original.model == "gpt-4.1-mini"
        assert comparison.original.text == original.text
        assert comparison.original.cost_usd == original.cost_usd
        new = comparison.replay
        assert new.model == "gpt-4.1" and new.text and new.usage is not None
        assert new.usage.output_tokens > 0
        assert new.cost_usd == cost_usd(DEFAULT_PRICES, "gpt-4.1", new.usage)
    # Same prompts (the sandbox's story depends on the player's words), a dearer model.
    first = report.turns[0]
    assert first.replay.text == first.original.text
    assert first.replay.usage is not None  # cached tokens differ: the sandbox saw it before
    original_usage = played.completions[0].usage
    assert first.replay.usage.input_tokens == original_usage.input_tokens
    assert first.replay.usage.output_tokens == original_usage.output_tokens
    assert (first.replay.cost_usd or 0) > (first.original.cost_usd or 0)

    shown = side_by_side(first, 120)
    assert "original · gpt-4.1-mini" in shown and "replay · gpt-4.1" in shown
    assert f"${first.original.cost_usd:.6f}" in shown and f"${first.replay.cost_usd:.6f}" in shown
    assert "5/5 narrated" in footer(report)


async def test_renarrating_from_a_turn_starts_from_the_original_story_so_far(
    played: Played, sandbox: str, nats_url: str
) -> None:
    already_sent = len(sandbox_requests(sandbox))
    originals = narrations_sent(sandbox)
    report = ReplayReport(played.session_id, "test2", 3, None, 0.1)
    await renarrate(
        nats_url,
        played.session_id,
        report,
        settings=narrator_settings(nats_url, sandbox),
        progress=False,
    )
    assert [c.number for c in report.turns] == [3, 4, 5]
    requests = [r["body"] for r in sandbox_requests(sandbox)[already_sent:]]
    assert [body["temperature"] for body in requests] == [0.1] * 3
    assert [body["model"] for body in requests] == ["gpt-4.1-mini"] * 3  # as recorded
    third = originals[str(played.turns[2].turn_id)]
    assert (requests[0]["instructions"], requests[0]["input"]) == (
        third["instructions"],
        third["input"],
    )


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taleforge.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


async def test_the_command_side_by_side_then_ctrl_c_and_rebuild(
    played: Played, nats_url: str, database_url: str
) -> None:
    # A slow model: one turn takes seconds, so Ctrl-C lands in the middle of the replay.
    # (The server starts and stops in a thread: its shutdown waits for the cut stream.)
    server = serve_in_thread(create_sandbox(OpenAISandboxConfig(token_delay_ms=80)))
    slow = await asyncio.to_thread(server.__enter__)
    try:
        proc = await run_cli(
            "replay",
            "--renarrate",
            "--session",
            str(played.session_id),
            "--model",
            "gpt-4o-mini",
            "--nats-url",
            nats_url,
            env={"OPENAI_BASE_URL": f"{slow}/v1"},
        )
        assert proc.stdout is not None
        async with asyncio.timeout(60), httpx.AsyncClient(base_url=slow) as client:
            first_turn = [await proc.stdout.readline() for _ in range(4)]
            while len((await client.get("/_sandbox/requests")).json()) < 2:
                await asyncio.sleep(0.05)  # the second turn is being narrated
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            stdout, stderr = await proc.communicate()
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
    assert proc.returncode == 130, stderr
    shown = b"".join(first_turn).decode() + stdout.decode()
    assert "Re-narrating session" in shown and "nothing live changes" in shown
    assert "original · gpt-4.1-mini" in shown and "replay · gpt-4o-mini" in shown
    assert "interrupted after 1 of 5 turns" in shown
    assert b"Traceback" not in stderr

    proc = await run_cli("replay", "--rebuild", "--into", database_url, "--nats-url", nats_url)
    async with asyncio.timeout(120):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr
    assert b"rebuilt 21 events" in stdout
    assert (await row_counts(database_url))["turns"] == 5


async def test_a_loaded_save_is_shown_and_replayed_as_the_story_went_on(
    log: Log, narrators: Narrators, sandbox: str, nats_url: str
) -> None:
    await narrators.start()
    played = await play(log, INPUTS[:3])
    first = played.turns[0]
    # The player loads a save made after the first turn: turns 2 and 3 are undone.
    await log.publish(
        SessionRestored(
            session_id=played.session_id,
            user_id=played.session.user_id,
            turn_id=first.turn_id,
            save_id=uuid.uuid4(),
        )
    )
    await play(log, [(InputType.SPEECH, "Let us try the other path")], played)
    await narrators.stop()
    after = played.turns[-1]
    sent = narrations_sent(sandbox)[str(after.turn_id)]
    assert all(INPUTS[1][1] not in m["content"] for m in sent["input"])  # turn 2 is undone

    rebuilt = await rebuild_prompt(nats_url, after.turn_id, played.session_id)
    assert rebuilt.check is Check.VERIFIED, rebuilt.explain()
    assert rebuilt.prompt.messages == sent["input"]

    already_sent = len(sandbox_requests(sandbox))
    report = ReplayReport(played.session_id, "test4", 1, None, None)
    settings = narrator_settings(nats_url, sandbox)
    await renarrate(nats_url, played.session_id, report, settings=settings, progress=False)
    assert [c.number for c in report.turns] == [1, 2, 3, 4]
    replayed = [r["body"] for r in sandbox_requests(sandbox)[already_sent:]]
    # The sandbox tells the same story again, so the replay's last prompt is the original's:
    # the restore was replayed too.
    assert replayed[-1]["input"] == sent["input"]
