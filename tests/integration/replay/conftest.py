"""A session played for real: the narrator on real NATS, calling the OpenAI sandbox.

`played` narrates a 5-turn session (scenario, opening and all) and records what the sandbox
received for each turn, so the timeline, show-prompt and replay tests have a real log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from taleforge.contracts import (
    InputType,
    NarrationCompleted,
    SessionStarted,
    TurnRequested,
    parse_event,
    publish_headers,
)
from taleforge.contracts.events import Character, ScenarioSnapshot
from taleforge.narrator.app import create_app
from taleforge.narrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

INPUTS = [
    (InputType.SPEECH, "Hello? Is anyone keeping this bell?"),
    (InputType.ACTION, "I light the lantern and step onto the pier"),
    (InputType.SPEECH, "Brother Hesk, what lies beneath the water?"),
    (InputType.ACTION, "I dive under the bell"),
    (InputType.CONTINUE, ""),
]


@pytest.fixture
def sandbox() -> Iterator[str]:
    with serve_in_thread(create_sandbox()) as url:
        # No pictures: usage counts are the text's alone and no image events interleave.
        httpx.put(f"{url}/_sandbox/faults", json={"illustrate": "never"}).raise_for_status()
        yield url


def sandbox_requests(url: str) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{url}/_sandbox/requests").json()
    return requests


def narrations_sent(url: str, turns: list[TurnRequested] | None = None) -> dict[str, Any]:
    """Turn id -> the body of the narration request the sandbox received for it.

    Responses requests name their turn in `metadata`; Chat Completions requests carry no
    metadata, so with `turns` (narrated one after another, no retries) they are taken in order.
    """
    requests = [r["body"] for r in sandbox_requests(url) if r["body"].get("stream")]
    if turns is not None:
        assert len(requests) == len(turns)
        return {str(t.turn_id): body for t, body in zip(turns, requests, strict=True)}
    return {body["metadata"]["turn_id"]: body for body in requests if body.get("metadata")}


class Log:
    """Every stream event as it is stored (an ordered consumer on story.events.>)."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc, self.js = nc, js
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    async def start(self) -> None:
        async def on_event(msg: Any) -> None:
            self.events.append(parse_event(msg.data))
            self._changed.set()

        await self.js.subscribe("story.events.>", cb=on_event, ordered_consumer=True)

    async def wait_for(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    def outcome(self, turn: TurnRequested) -> Any:
        for event in self.events:
            if event.turn_id == turn.turn_id and event.type in (
                "narration.completed",
                "turn.failed",
            ):
                return event
        return None

    def image_ids(self) -> set[uuid.UUID]:
        return {e.image_id for e in self.events if e.type == "image.requested"}

    async def publish(self, event: Any) -> None:
        await self.js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))


@pytest.fixture
async def log(nats_url: str) -> AsyncIterator[Log]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    recorder = Log(nc, js)
    await recorder.start()
    yield recorder
    await nc.close()


def narrator_settings(nats_url: str, sandbox: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "openai_base_url": f"{sandbox}/v1",
        "openai_max_retries": 0,
        "request_timeout_s": 20.0,
        "stall_timeout_s": 10.0,
        "ack_wait_s": 20.0,
        "max_deliver": 3,
        "retry_backoff_s": 0.05,
        "retry_backoff_max_s": 0.2,
        "concurrency": 2,
    }
    return Settings(**{**values, **overrides})


class Narrators:
    """Narrator services started in-process; `stop` them as soon as their work is done
    (stopping one that has idled past a fetch timeout waits out a drain timeout)."""

    def __init__(self, nats_url: str, sandbox: str) -> None:
        self.nats_url, self.sandbox = nats_url, sandbox
        self.apps: list[Any] = []

    async def start(self, **overrides: Any) -> Any:
        app = create_app(narrator_settings(self.nats_url, self.sandbox, **overrides))
        await app.start()
        self.apps.append(app)
        return app

    async def stop(self) -> None:
        while self.apps:
            await self.apps.pop().stop()


@pytest.fixture
async def narrators(nats_url: str, sandbox: str) -> AsyncIterator[Narrators]:
    running = Narrators(nats_url, sandbox)
    yield running
    await running.stop()


@dataclass
class Played:
    session: SessionStarted
    turns: list[TurnRequested] = field(default_factory=list)
    completions: list[NarrationCompleted] = field(default_factory=list)

    @property
    def session_id(self) -> uuid.UUID:
        return self.session.session_id


def a_session() -> SessionStarted:
    return SessionStarted(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        scenario_id="drowned-bell",
        title="The Drowned Bell",
        opening="Fog rolls over the harbour as the bell tolls beneath the water.",
        scenario=ScenarioSnapshot(
            world="A drowned city whose bells still ring.",
            tone="Eerie and hushed.",
            rules=["The tide never lies."],
            player_character=Character(name="Ada Vell", description="A diver."),
            characters=[Character(name="Brother Hesk", description="A bell-keeper.")],
        ),
    )


async def play(
    log: Log, inputs: list[tuple[InputType, str]] = INPUTS, played: Played | None = None
) -> Played:
    """Start a session (or go on with `played`) and play turns one after another."""
    if played is None:
        played = Played(a_session())
        await log.publish(played.session)
    for input_type, text in inputs:
        turn = TurnRequested(
            session_id=played.session_id,
            user_id=played.session.user_id,
            turn_id=uuid.uuid4(),
            input_type=input_type,
            text=text,
        )
        played.turns.append(turn)
        await log.publish(turn)
        await log.wait_for(lambda t=turn: log.outcome(t) is not None)  # type: ignore[misc]
        outcome = log.outcome(turn)
        assert outcome.type == "narration.completed", outcome
        played.completions.append(outcome)
        # The narrator asks for the beat's picture right after it: let the turn finish.
        await log.wait_for(lambda o=outcome: set(o.image_ids) <= log.image_ids())  # type: ignore[misc]
    return played


@pytest.fixture
async def played(log: Log, narrators: Narrators) -> Played:
    """A 5-turn session, narrated with the default settings (the narrator is stopped after)."""
    await narrators.start()
    session = await play(log)
    await narrators.stop()
    return session
