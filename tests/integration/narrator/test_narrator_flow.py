"""The narrator on a real nats-server, calling the OpenAI sandbox through the real SDK."""

from __future__ import annotations

import asyncio
import json
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
    TurnRequested,
    event_subject,
    parse_event,
    parse_live_event,
    publish_headers,
)
from taleforge.narrator.app import create_app
from taleforge.narrator.prompting import build_prompt
from taleforge.narrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.openai import deterministic_reply, stream_tokens
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox() -> Iterator[str]:
    with serve_in_thread(create_sandbox()) as url:
        yield url


def set_faults(url: str, **faults: object) -> None:
    httpx.put(f"{url}/_sandbox/faults", json=faults).raise_for_status()


def sandbox_calls(url: str) -> int:
    return len(httpx.get(f"{url}/_sandbox/requests").json())


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

    def of_type(self, event_type: str) -> list[Any]:
        return [e for e in self.events if e.type == event_type]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def publish_turn(self, turn: TurnRequested, *, dedupe: bool = True) -> None:
        headers = publish_headers(turn) if dedupe else None
        await self.js.publish(turn.subject(), turn.to_bytes(), headers=headers)


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
        "openai_max_retries": 0,  # let JetStream redeliver, so the nak path is what we test
        "request_timeout_s": 5.0,
        "stall_timeout_s": 0.5,
        "ack_wait_s": 5.0,
        "max_deliver": 4,
        "retry_backoff_s": 0.05,
        "retry_backoff_max_s": 0.2,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
async def run_narrator(nats_url: str, sandbox: str) -> AsyncIterator[Callable[..., Any]]:
    apps: list[Any] = []

    async def start(**overrides: Any) -> None:
        app = create_app(settings_for(nats_url, sandbox, **overrides))
        await app.start()
        apps.append(app)

    yield start
    for app in apps:
        await app.stop()


def a_turn(
    text: str = "Who goes there?", input_type: InputType = InputType.SPEECH
) -> TurnRequested:
    return TurnRequested(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=input_type,
        text=text,
    )


def expected_text(turn: TurnRequested) -> str:
    return deterministic_reply(build_prompt(turn).player_text)


async def test_a_turn_is_narrated_with_live_deltas_and_an_image_request(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    turn = a_turn()
    await bus.publish_turn(turn)
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
    assert completed.usage.input_tokens > 0
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

    body = httpx.get(f"{sandbox}/_sandbox/requests").json()[0]["body"]
    assert body["stream"] is True and body["instructions"]
    assert body["metadata"]["turn_id"] == str(turn.turn_id)


async def test_rate_limited_turn_is_retried_until_it_completes(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, rate_limit_first_n=2, retry_after_s=0.05)
    await run_narrator()
    turn = a_turn("I hide behind the barrels", InputType.ACTION)
    await bus.publish_turn(turn)
    await bus.wait_for(lambda: bool(bus.of_type("narration.completed")))
    assert bus.of_type("narration.completed")[0].text == expected_text(turn)
    assert sandbox_calls(sandbox) == 3
    assert not bus.of_type("turn.failed")


async def test_stalled_stream_is_retried_and_never_published_as_complete(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, stall_after_deltas=3, stream_fault_calls=1)
    await run_narrator()
    turn = a_turn("", InputType.CONTINUE)
    await bus.publish_turn(turn)
    await bus.wait_for(lambda: bool(bus.of_type("image.requested")))
    [completed] = bus.of_type("narration.completed")
    assert completed.text == expected_text(turn)
    assert sandbox_calls(sandbox) == 2


async def test_bad_api_key_fails_the_turn_at_once(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, auth_failure=True)
    await run_narrator()
    turn = a_turn()
    await bus.publish_turn(turn)
    await bus.wait_for(lambda: bool(bus.of_type("turn.failed")))
    [failed] = bus.of_type("turn.failed")
    assert failed.code == "provider_auth" and "401" in failed.reason
    assert sandbox_calls(sandbox) == 1
    assert not bus.of_type("narration.completed")


async def test_persistent_outage_ends_in_turn_failed_after_max_deliver(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    set_faults(sandbox, server_error_next_n=100)
    await run_narrator(max_deliver=2)
    turn = a_turn()
    await bus.publish_turn(turn)
    await bus.wait_for(lambda: bool(bus.of_type("turn.failed")))
    [failed] = bus.of_type("turn.failed")
    assert failed.code == "provider_unavailable"
    assert sandbox_calls(sandbox) == 2


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
    await bus.publish_turn(turn)
    await bus.wait_for(lambda: bool(bus.of_type("image.requested")))
    async with asyncio.timeout(5):
        while (info := await bus.js.consumer_info(STREAM_NAME, "narrator")).num_ack_pending:
            await asyncio.sleep(0.02)  # the good turn's ack follows its last publish
    assert info.num_redelivered == 0 and info.delivered.consumer_seq == 3
    assert sandbox_calls(sandbox) == 1


async def test_redelivered_turn_does_not_complete_twice(
    bus: Bus, sandbox: str, run_narrator: Callable[..., Any]
) -> None:
    await run_narrator()
    turn = a_turn()
    # Stored twice (no msg id), so the narrator handles the same turn twice.
    await bus.publish_turn(turn, dedupe=False)
    await bus.publish_turn(turn, dedupe=False)
    marker = a_turn("and then?")
    await bus.publish_turn(marker)
    await bus.wait_for(lambda: len(bus.of_type("narration.completed")) >= 2)
    completed = [e for e in bus.of_type("narration.completed") if e.turn_id == turn.turn_id]
    images = [e for e in bus.of_type("image.requested") if e.turn_id == turn.turn_id]
    assert len(completed) == 1 and len(images) == 1
    assert sandbox_calls(sandbox) == 3
