"""Loading a save rewinds the narrator: the next prompt (what the OpenAI sandbox receives)
has the story up to the save's turn and nothing of the turns after it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from taleforge.contracts import InputType, SessionRestored, SessionStarted, TurnRequested
from taleforge.narrator.app import create_app
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

from .test_narrator_flow import Bus, a_session, a_turn, sandbox_requests, set_faults, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture(name="sandbox_url")
def sandbox_fixture() -> Iterator[str]:
    with serve_in_thread(create_sandbox()) as url:
        set_faults(url, illustrate="never")
        yield url


@pytest.fixture(name="recorder")
async def recorder_fixture(nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    bus = Bus(nc, js)
    await bus.start()
    yield bus
    await nc.close()


def prompt_of(sandbox_url: str, turn: TurnRequested) -> str:
    [body] = [
        r["body"]
        for r in sandbox_requests(sandbox_url)
        if r["body"].get("metadata", {}).get("turn_id") == str(turn.turn_id)
    ]
    return json.dumps(body)


def restored(session: SessionStarted, turn: TurnRequested | None) -> SessionRestored:
    return SessionRestored(
        session_id=session.session_id,
        user_id=session.user_id,
        turn_id=turn.turn_id if turn else None,
        save_id=uuid.uuid4(),
    )


async def test_the_next_prompt_continues_from_the_restored_turn(
    nats_url: str, sandbox_url: str, recorder: Bus
) -> None:
    app = create_app(settings_for(nats_url, sandbox_url))
    await app.start()
    try:
        session = a_session(world="A drowned city whose bells still ring.")
        await recorder.publish(session)
        said = ["I ring the first bell", "I swim to the tower", "I open the sea gate"]
        turns = [a_turn(text, InputType.ACTION, session.session_id) for text in said]
        for turn in turns:
            await recorder.publish(turn)
        narrations = [(await recorder.settled(turn)).text for turn in turns]
        assert len(set(narrations)) == 3  # each beat is told apart in the prompts below

        await recorder.publish(restored(session, turns[0]))
        after_load = a_turn("I look around", InputType.ACTION, session.session_id)
        await recorder.publish(after_load)
        assert (await recorder.settled(after_load)).type == "narration.completed"

        prompt = prompt_of(sandbox_url, after_load)
        assert "drowned city" in prompt and session.opening[:40] in prompt
        assert said[0] in prompt and narrations[0][:60] in prompt
        for undone in (1, 2):
            assert said[undone] not in prompt
            assert narrations[undone][:60] not in prompt

        # Back to the opening: not even the first beat is left.
        await recorder.publish(restored(session, None))
        fresh = a_turn("I begin again", InputType.ACTION, session.session_id)
        await recorder.publish(fresh)
        await recorder.settled(fresh)
        prompt = prompt_of(sandbox_url, fresh)
        assert session.opening[:40] in prompt
        for text in [*said, "I look around"]:
            assert text not in prompt
        # The turns undone stay settled: a copy redelivered now is not narrated again.
        calls = len(sandbox_requests(sandbox_url))
        await recorder.publish(turns[2], dedupe=False)
        again = a_turn("And then?", InputType.ACTION, session.session_id)
        await recorder.publish(again)
        await recorder.settled(again)
        assert len(sandbox_requests(sandbox_url)) == calls + 1
        assert len(recorder.of_type("narration.completed", turns[2])) == 1
    finally:
        await app.stop()
