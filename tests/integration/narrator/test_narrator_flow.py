"""The narrator on a real nats-server, calling the OpenAI sandbox through the real SDK.

Fixtures: the STORY stream, the sandbox over HTTP, narrators started in-process.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from taleforge.contracts import (
    STREAM_NAME,
    InputType,
    SessionStarted,
    TurnRequested,
    event_subject,
    parse_event,
    parse_live_event,
    publish_headers,
)
from taleforge.contracts.events import Character, ImagePolicy, ScenarioSnapshot
from taleforge.narrator.adapters import settings_kv
from taleforge.narrator.adapters.session_store import open_bucket
from taleforge.narrator.adapters.settings_kv import KvSettings
from taleforge.narrator.app import create_app
from taleforge.narrator.pricing import DEFAULT_PRICES
from taleforge.narrator.prompting import build_prompt
from taleforge.narrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.openai import deterministic_reply, stream_tokens
from taleforge.sandboxes.serving import serve_in_thread


@pytest.fixture
def sandbox() -> Iterator[str]:
    with serve_in_thread(create_sandbox()) as url:
        # Pictures only when a test asks for them, so usage counts are the text's alone.
        set_faults(url, illustrate="never")
        yield url


def set_faults(url: str, **faults: object) -> None:
    httpx.put(f"{url}/_sandbox/faults", json=faults).raise_for_status()


def sandbox_requests(url: str) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/requests").json()
    return requests


def sandbox_calls(url: str) -> int:
    return len(sandbox_requests(url))


class Bus:
    """A test's view of the bus: every stream event and live delta, as they arrive."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc, self.js = nc, js
        self.events: list[Any] = []
        self.live: list[Any] = []
        self._changed = asyncio.Event()

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            self.events.append(parse_event(msg.data))
            self._changed.set()

        async def on_live(msg: Any) -> None:
            self.live.append(parse_live_event(msg.data))
            self._changed.set()

        await self.js.subscribe("story.events.>", cb=on_event, ordered_consumer=True)
        await self.nc.subscribe("story.live.>", cb=on_live)

    def of_type(self, event_type: str, turn: TurnRequested | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if e.type == event_type and (turn is None or e.turn_id == turn.turn_id)
        ]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def settled(self, turn: TurnRequested, timeout: float = 10.0) -> Any:
        """The turn's NarrationCompleted or TurnFailed, once published."""
        await self.wait_for(
            lambda: bool(
                self.of_type("narration.completed", turn) or self.of_type("turn.failed", turn)
            ),
            timeout,
        )
        return (self.of_type("narration.completed", turn) or self.of_type("turn.failed", turn))[0]

    async def publish(self, event: Any, *, dedupe: bool = True) -> None:
        headers = publish_headers(event) if dedupe else None
        await self.js.publish(event.subject(), event.to_bytes(), headers=headers)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    recorder = Bus(nc, js)
    await recorder.start()
    yield recorder
    await nc.close()


def settings_for(nats_url: str, sandbox: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "openai_base_url": f"{sandbox}/v1",
        "openai_max_retries": 0,  # the narrator's own retries are what we test
        "request_timeout_s": 5.0,
        # Only the stall fault must trip it (that stall never ends); a busy machine must not.
        "stall_timeout_s": 2.0,
        "ack_wait_s": 5.0,
        "max_deliver": 4,
        "retry_backoff_s": 0.05,
        "retry_backoff_max_s": 0.2,
        "concurrency": 4,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
async def run_narrator(nats_url: str, sandbox: str) -> AsyncIterator[Callable[..., Any]]:
    apps: list[Any] = []

    async def start(**overrides: Any) -> Any:
        app = create_app(settings_for(nats_url, sandbox, **overrides))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


def a_turn(
    text: str = "Who goes there?",
    input_type: InputType = InputType.SPEECH,
    session_id: uuid.UUID | None = None,
) -> TurnRequested:
    return TurnRequested(
        session_id=session_id or uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=input_type,
        text=text,
    )


def a_session(**scenario: Any) -> SessionStarted:
    return SessionStarted(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        scenario_id="test",
        title="The Drowned Bell",
        opening="Fog rolls over the harbour as the bell tolls beneath the water.",
        scenario=ScenarioSnapshot(**scenario),
    )


pytestmark = pytest.mark.integration


def expected_text(turn: TurnRequested) -> str:
    """The sandbox's reply depends only on the last user message: the turn's input."""
    return deterministic_reply(build_prompt(turn).player_text)


async def test_a_turn_is_narrated_with_live_deltas_in_order_and_an_image_request(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    turn = a_turn()
    await bus.publish(turn)
    await bus.wait_for(lambda: bool(bus.of_type("image.requested")))

    text = expected_text(turn)
    [started] = bus.of_type("narration.started")
    [completed] = bus.of_type("narration.completed")
    [image] = bus.of_type("image.requested")
    assert started.turn_id == completed.turn_id == image.turn_id == turn.turn_id
    assert started.attempt == 1
    assert completed.text == text
    assert completed.model == "gpt-4.1-mini"
    assert completed.response_id.startswith("resp_")
    assert completed.usage.output_tokens == len(stream_tokens(text))
    assert completed.usage.total_tokens == completed.usage.input_tokens + len(stream_tokens(text))
    assert completed.event_id == uuid.uuid5(turn.turn_id, "narration.completed")
    assert completed.time_to_first_token_ms is not None and completed.duration_ms is not None
    assert image.image_id == uuid.uuid5(turn.turn_id, "image:scene")
    assert image.kind == "scene" and image.seed is not None
    assert image.prompt.startswith(text.split(",")[0])

    def deltas_of_turn() -> list[Any]:
        return [d for d in bus.live if d.turn_id == turn.turn_id]

    # Live deltas travel on core NATS, beside the stream: they may land a moment later.
    await bus.wait_for(lambda: len(deltas_of_turn()) == len(stream_tokens(text)), timeout=2)
    deltas = deltas_of_turn()
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert "".join(d.delta for d in deltas) == text

    body = sandbox_requests(sandbox)[0]["body"]
    assert body["stream"] is True and body["instructions"]
    assert body["metadata"]["turn_id"] == str(turn.turn_id)
    assert body["prompt_cache_key"] == f"taleforge-v2-{turn.session_id}"


async def test_context_carries_the_scenario_and_history_in_a_stable_order(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    session = a_session(
        world="A drowned city whose bells still ring.",
        tone="Eerie and hushed.",
        rules=["The tide never lies."],
        player_character=Character(name="Ada Vell", description="A diver."),
        characters=[Character(name="Brother Hesk", description="A bell-keeper.")],
    )
    await bus.publish(session)
    first = a_turn("Hello, Hesk?", InputType.SPEECH, session.session_id)
    second = a_turn("I dive under the bell", InputType.ACTION, session.session_id)
    third = a_turn("", InputType.CONTINUE, session.session_id)
    for turn in (first, second, third):
        await bus.publish(turn)
    completed = [await bus.settled(t) for t in (first, second, third)]
    assert [c.text for c in completed] == [expected_text(t) for t in (first, second, third)]

    bodies = [r["body"] for r in sandbox_requests(sandbox)]
    assert len(bodies) == 3
    instructions = bodies[2]["instructions"]
    for fragment in ("drowned city", "Eerie and hushed", "The tide never lies", "Ada Vell"):
        assert fragment in instructions
    assert instructions.index("## World") < instructions.index("## Characters")
    assert [(m["role"], m["content"][:30]) for m in bodies[2]["input"]] == [
        ("assistant", session.opening[:30]),
        ("user", 'The player character says: "He'),
        ("assistant", completed[0].text[:30]),
        ("user", "The player character does this"),
        ("assistant", completed[1].text[:30]),
        ("user", "Continue the story from where "),
    ]
    # Each prompt is the prefix of the next one: what provider prompt caching needs.
    assert bodies[1]["instructions"] == bodies[2]["instructions"]
    assert bodies[2]["input"][: len(bodies[1]["input"])] == bodies[1]["input"]
    assert {b["prompt_cache_key"] for b in bodies} == {f"taleforge-v2-{session.session_id}"}
    assert completed[2].usage.cached_tokens > 0  # the sandbox's stand-in prefix cache

    # Cost from usage and the price table, cached input priced separately.
    price, usage = DEFAULT_PRICES["gpt-4.1-mini"], completed[2].usage
    expected = (
        (usage.input_tokens - usage.cached_tokens) * price.input
        + usage.cached_tokens * (price.cached_input or 0)
        + usage.output_tokens * price.output
    ) / 1_000_000
    assert completed[2].cost_usd == pytest.approx(expected)
    assert (
        completed[2].settings.model == "gpt-4.1-mini" and completed[2].settings.api == "responses"
    )


async def test_oldest_turns_are_folded_into_a_summary_once(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator(context_budget_tokens=400, summary_max_output_tokens=100)
    session = a_session(world="A small, quiet world.")
    await bus.publish(session)
    turns = [
        a_turn(f"I walk to stone number {i}", InputType.ACTION, session.session_id)
        for i in range(8)
    ]
    for turn in turns:
        await bus.publish(turn)
    for turn in turns:
        assert (await bus.settled(turn)).type == "narration.completed"

    requests = sandbox_requests(sandbox)
    summaries = [r["body"] for r in requests if r["body"]["model"] == "gpt-4.1-nano"]
    narrations = [r["body"] for r in requests if r["body"]["model"] == "gpt-4.1-mini"]
    assert len(narrations) == 8 and summaries, "the history outgrew the budget"
    folded_turns = []
    for body in summaries:
        text = body["input"][0]["content"]
        folded_turns += [int(n) for n in re.findall(r"Turn (\d+)\.", text)]
    assert len(folded_turns) == len(set(folded_turns)), "no turn is summarised twice"
    assert folded_turns == sorted(folded_turns) and folded_turns[0] == 1
    last = narrations[-1]["input"]
    assert last[0]["role"] == "system" and "story so far" in last[0]["content"]
    assert "stone number 0" not in json.dumps(last)  # folded away
    assert "stone number 7" in last[-1]["content"]


@pytest.mark.parametrize(
    "faults",
    [
        {"rate_limit_first_n": 2, "retry_after_s": 0.05},
        {"server_error_next_n": 1},
        {"stall_after_deltas": 3, "stream_fault_calls": 1},
        {"drop_after_deltas": 3, "stream_fault_calls": 1},
        {"error_event_after_deltas": 2, "error_event_shape": "nested", "stream_fault_calls": 1},
        {"error_event_after_deltas": 2, "error_event_shape": "flat", "stream_fault_calls": 1},
        {"malformed_after_deltas": 2, "stream_fault_calls": 1},
    ],
    ids=["429-twice", "500-once", "stall", "drop", "error-nested", "error-flat", "malformed"],
)
async def test_transient_faults_are_retried_and_only_the_whole_beat_is_published(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any], faults: dict[str, Any]
) -> None:
    set_faults(sandbox, illustrate="never", **faults)
    await run_narrator()
    turn = a_turn("I hide behind the barrels", InputType.ACTION)
    await bus.publish(turn)
    completed = await bus.settled(turn)
    assert completed.type == "narration.completed"
    assert completed.text == expected_text(turn)
    assert sandbox_calls(sandbox) == 1 + faults.get("rate_limit_first_n", 0) + (
        0 if "rate_limit_first_n" in faults else 1
    )
    assert [s.attempt for s in bus.of_type("narration.started")] == [1]  # one id, deduped
    assert len(bus.of_type("narration.completed")) == 1 and not bus.of_type("turn.failed")


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        ({"auth_failure": True}, "provider_auth"),
        ({"insufficient_quota": True}, "provider_quota"),
        (
            {"error_event_after_deltas": 1, "error_event_code": "insufficient_quota"},
            "provider_quota",
        ),
    ],
    ids=["401", "insufficient-quota", "quota-error-event"],
)
async def test_permanent_errors_fail_the_turn_at_once(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any], faults: dict[str, Any], code: str
) -> None:
    set_faults(sandbox, **faults)
    await run_narrator()
    turn = a_turn()
    await bus.publish(turn)
    failed = await bus.settled(turn)
    assert failed.type == "turn.failed" and failed.code == code and failed.reason
    assert sandbox_calls(sandbox) == 1
    assert not bus.of_type("narration.completed")


async def test_persistent_outage_ends_in_turn_failed_after_max_deliver(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, server_error_next_n=100)
    await run_narrator(max_deliver=2)
    turn = a_turn()
    await bus.publish(turn)
    failed = await bus.settled(turn)
    assert failed.code == "provider_unavailable" and "2 attempts" in failed.reason
    assert sandbox_calls(sandbox) == 2


async def test_a_session_stays_in_order_while_another_session_retries(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator(concurrency=8)
    slow, fast = uuid.uuid4(), uuid.uuid4()
    set_faults(sandbox, illustrate="never", rate_limit_first_n=1, retry_after_s=0.5)
    slow_turns = [a_turn(f"slow {i}", session_id=slow) for i in range(3)]
    for turn in slow_turns:
        await bus.publish(turn)
    # The first turn is calling the model (and gets the 429, retried after 0.5 s).
    await bus.wait_for(lambda: bool(bus.of_type("narration.started", slow_turns[0])))
    fast_turns = [a_turn(f"fast {i}", session_id=fast) for i in range(2)]
    for turn in fast_turns:
        await bus.publish(turn)
    for turn in [*slow_turns, *fast_turns]:
        await bus.settled(turn)
    order = [e.turn_id for e in bus.of_type("narration.completed")]
    slow_ids = [t.turn_id for t in slow_turns]
    assert [t for t in order if t in slow_ids] == slow_ids
    # The other session did not wait for the retried one.
    assert order.index(fast_turns[-1].turn_id) < order.index(slow_ids[0])


async def test_malformed_event_is_terminated_and_the_next_turn_completes(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    session = uuid.uuid4()
    await bus.js.publish(event_subject(session, "turn.requested"), b"{not json")
    await bus.js.publish(
        event_subject(session, "turn.requested"), json.dumps({"type": "turn.requested"}).encode()
    )
    turn = a_turn()
    await bus.publish(turn)
    await bus.wait_for(lambda: bool(bus.of_type("image.requested")))
    async with asyncio.timeout(5):
        while (info := await bus.js.consumer_info(STREAM_NAME, "narrator")).num_ack_pending:
            await asyncio.sleep(0.02)  # the good turn's ack follows its last publish
    assert info.num_redelivered == 0 and info.delivered.consumer_seq == 3
    assert sandbox_calls(sandbox) == 1


async def test_a_turn_handled_again_does_not_call_the_provider_twice(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    app = await run_narrator()
    turn = a_turn()
    # Stored twice (no msg id), so the narrator is handed the same turn twice.
    await bus.publish(turn, dedupe=False)
    await bus.publish(turn, dedupe=False)
    marker = a_turn("and then?", session_id=turn.session_id)
    await bus.publish(marker)
    await bus.settled(marker)
    assert sandbox_calls(sandbox) == 2
    assert len(bus.of_type("narration.completed", turn)) == 1
    assert len(bus.of_type("image.requested", turn)) == 1

    # After a restart, the session state (KV) still knows the turn was narrated.
    await app.stop()
    await run_narrator()
    await bus.publish(turn, dedupe=False)
    after = a_turn("and now?", session_id=turn.session_id)
    await bus.publish(after)
    await bus.settled(after)
    assert sandbox_calls(sandbox) == 3
    last_input = sandbox_requests(sandbox)[-1]["body"]["input"]
    assert [m["role"] for m in last_input] == ["user", "assistant"] * 2 + ["user"]


async def test_live_setting_change_is_used_by_the_next_turn(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    first = a_turn()
    await bus.publish(first)
    assert (await bus.settled(first)).settings.model == "gpt-4.1-mini"

    kv = await bus.js.key_value("narrator-settings")
    await kv.put("model", b"gpt-4.1")
    await kv.put("temperature", b"0.2")
    await kv.put("image_policy", b"never")
    second = a_turn("again", session_id=first.session_id)
    await bus.publish(second)
    completed = await bus.settled(second)
    assert completed.settings.model == "gpt-4.1" and completed.model == "gpt-4.1"
    assert completed.settings.temperature == 0.2
    assert completed.settings.image_policy == "never"
    body = sandbox_requests(sandbox)[-1]["body"]
    assert body["model"] == "gpt-4.1" and body["temperature"] == 0.2 and "tools" not in body
    assert completed.cost_usd == pytest.approx(
        (
            (completed.usage.input_tokens - completed.usage.cached_tokens) * 2.0
            + completed.usage.cached_tokens * 0.5
            + completed.usage.output_tokens * 8.0
        )
        / 1_000_000
    )
    assert not bus.of_type("image.requested", second)


async def test_the_model_asks_for_pictures_and_the_policy_decides(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, illustrate="always")
    await run_narrator()
    session = a_session(
        characters=[Character(name="Brother Hesk", description="A bell-keeper.")],
        image_policy=ImagePolicy.ON_SCENE_CHANGE,
    )
    await bus.publish(session)
    first = a_turn("Hesk, is that you?", session_id=session.session_id)
    await bus.publish(first)
    await bus.settled(first)
    await bus.wait_for(lambda: bool(bus.of_type("image.requested", first)))
    [image] = bus.of_type("image.requested", first)
    assert image.characters == ["Brother Hesk"] and image.kind == "portrait"
    assert image.image_id == uuid.uuid5(first.turn_id, "image:portrait")
    # The model's proposal is recorded with the narration: a lost request can be rebuilt.
    [narration] = bus.of_type("narration.completed", first)
    assert narration.illustration is not None and narration.illustration.kind == "portrait"
    assert image.prompt.startswith(narration.illustration.prompt.rstrip(" .!?"))
    assert sandbox_requests(sandbox)[0]["body"]["tools"][0]["name"] == "request_illustration"

    set_faults(sandbox, illustrate="never")
    second = a_turn("I wait", session_id=session.session_id)
    await bus.publish(second)
    await bus.settled(second)
    third = a_turn("I wait more", session_id=session.session_id)
    await bus.publish(third)
    await bus.settled(third)
    assert not bus.of_type("image.requested", second)  # no scene change, no picture


async def test_chat_completions_mode(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, illustrate="always")
    await run_narrator(api="chat")
    turn = a_turn("Lights!", InputType.ACTION)
    await bus.publish(turn)
    completed = await bus.settled(turn)
    assert completed.text == expected_text(turn)
    assert completed.usage.input_tokens > 0 and completed.usage.output_tokens > 0
    assert completed.settings.api == "chat"
    request = sandbox_requests(sandbox)[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["stream_options"] == {"include_usage": True}
    await bus.wait_for(lambda: bool(bus.of_type("image.requested", turn)))


async def test_live_settings_do_not_wait_for_compacted_delete_markers(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `nats kv compact` removes delete markers, so the bucket's last revision can be one
    # the watcher never sees; the next turns must not wait for it.
    monkeypatch.setattr(settings_kv, "SYNC_TIMEOUT_S", 60.0)
    nc = await nats.connect(nats_url)
    kv = await open_bucket(nc.jetstream(), "narrator-settings")
    await kv.put("model", b"gpt-4.1")
    await kv.delete("model")
    await kv.purge_deletes(olderthan=0)
    live = KvSettings(kv, settings_for(nats_url, "http://unused").live_defaults())
    await live.start()
    try:
        async with asyncio.timeout(5):
            assert (await live.current()).model == "gpt-4.1-mini"
    finally:
        await live.stop()
        await nc.close()
