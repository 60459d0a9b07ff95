"""`taleforge show-prompt`: the prompt rebuilt from the log equals what the OpenAI sandbox
received for that turn, byte for byte — before and after the memory folds, on both APIs."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from taleforge.cli.show_prompt import rebuild_prompt, render, request_fields
from taleforge.contracts import InputType
from taleforge.narrator.history import Check
from taleforge.narrator.prompting import SUMMARY_HEADING

from .conftest import Log, Narrators, Played, narrations_sent, play, sandbox_requests

pytestmark = pytest.mark.integration

SENT_FIELDS = ("model", "temperature", "max_output_tokens", "prompt_cache_key")


async def test_every_turn_s_prompt_equals_what_the_sandbox_received(
    played: Played, sandbox: str, nats_url: str
) -> None:
    sent = narrations_sent(sandbox)
    for turn in played.turns:
        rebuilt = await rebuild_prompt(nats_url, turn.turn_id)
        assert rebuilt.check is Check.VERIFIED, rebuilt.explain()
        fields, body = request_fields(rebuilt), sent[str(turn.turn_id)]
        assert fields["instructions"] == body["instructions"]
        assert fields["input"] == body["input"]
        assert {k: fields[k] for k in SENT_FIELDS} == {k: body[k] for k in SENT_FIELDS}

    # The command prints the same, as JSON, and exits 0 (found by a scan, no --session).
    last = played.turns[-1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taleforge.cli",
        "show-prompt",
        str(last.turn_id),
        "--json",
        "--nats-url",
        nats_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr
    printed = json.loads(stdout)
    body = sent[str(last.turn_id)]
    assert (printed["instructions"], printed["input"]) == (body["instructions"], body["input"])
    assert printed["check"] == "verified"


# Long inputs and a small budget: the oldest turns are folded into a summary every few turns.
LONG_INPUTS = [
    (InputType.ACTION, f"I search the {place} carefully, turning over every stone number {n}")
    for n, place in enumerate(
        ["pier", "belfry", "crypt", "harbour wall", "chapel", "boathouse", "sea gate"]
    )
]


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_prompts_after_a_summary_fold_are_rebuilt_exactly(
    api: str,
    log: Log,
    sandbox: str,
    nats_url: str,
    narrators: Narrators,
) -> None:
    await narrators.start(api=api, context_budget_tokens=700, summary_max_output_tokens=100)
    played = await play(log, LONG_INPUTS)
    await narrators.stop()

    folds = [e for e in log.events if e.type == "memory.folded"]
    assert folds, "the budget is small enough for the memory to fold"
    summaries = [
        r for r in sandbox_requests(sandbox) if (r["body"].get("metadata") or {}).get("purpose")
    ]
    if api == "responses":  # the summariser's reply is what the fold recorded
        assert len(summaries) == len(folds)
    sent = narrations_sent(sandbox, played.turns)
    after_fold = 0
    for turn in played.turns:
        rebuilt = await rebuild_prompt(nats_url, turn.turn_id, turn.session_id)
        assert rebuilt.check is Check.VERIFIED, rebuilt.explain()
        fields, body = request_fields(rebuilt), sent[str(turn.turn_id)]
        if api == "chat":
            assert fields["messages"] == body["messages"]
        else:
            assert fields["instructions"] == body["instructions"]
            assert fields["input"] == body["input"]
        messages = rebuilt.prompt.messages
        if any(m["content"].startswith(SUMMARY_HEADING) for m in messages):
            after_fold += 1
            summary = messages[0]["content"].removeprefix(SUMMARY_HEADING).strip()
            assert summary in [f.summary for f in folds]
    assert after_fold >= 2, "turns after a fold carry the summary in their prompt"

    text = render(await rebuild_prompt(nats_url, played.turns[-1].turn_id))
    assert "matches the narrator's record" in text and "summary of turns 1.." in text
