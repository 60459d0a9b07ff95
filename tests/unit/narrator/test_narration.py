"""The Narrator's decisions, with hand-written fakes for the bus, model, store and delivery."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from taleforge.contracts import Envelope, ImageKind, InputType, TokenUsage, TurnRequested
from taleforge.contracts.events import ImagePolicy
from taleforge.narrator.dispatch import SessionDispatcher
from taleforge.narrator.live_settings import FixedSettings, apply_override
from taleforge.narrator.model import (
    Illustration,
    ModelCall,
    ModelReply,
    OnDelta,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.narration import Narrator, NarratorConfig, RetryPolicy
from taleforge.narrator.pricing import DEFAULT_PRICES, ModelPrice, cost_usd
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings
from taleforge.narrator.story import SessionState
from taleforge.narrator.tokens import ApproxTokenCounter

TEXT = "The gate groans open. A lantern sways in the dark."


@dataclass
class FakeBus:
    events: list[Envelope] = field(default_factory=list)
    live: list[Envelope] = field(default_factory=list)

    async def publish_event(self, event: Envelope) -> None:
        self.events.append(event)

    async def publish_live(self, event: Envelope) -> None:
        self.live.append(event)


@dataclass
class FakeDelivery:
    attempt: int = 1
    stream_seq: int | None = 10
    delivered_at: float = 0.0
    outcome: str | None = None

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nack(self, delay_s: float) -> None:
        self.outcome = "nack"

    async def term(self) -> None:
        self.outcome = "term"

    async def in_progress(self) -> None:
        pass


@dataclass
class FakeModel:
    errors: list[Exception] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    illustration: Illustration | None = None

    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        self.calls.append(call)
        await on_delta("The gate ")
        if self.errors:
            raise self.errors.pop(0)
        await on_delta(TEXT.removeprefix("The gate "))
        usage = TokenUsage(input_tokens=1000, cached_tokens=400, output_tokens=100)
        return ModelReply(TEXT, call.model, usage, "resp_1", self.illustration)

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        return ModelReply("summary", call.model, TokenUsage(), "resp_s")


@dataclass
class FakeStore:
    states: dict[uuid.UUID, SessionState] = field(default_factory=dict)

    async def load(self, session_id: uuid.UUID) -> SessionState | None:
        return self.states.get(session_id)

    async def save(self, state: SessionState) -> None:
        self.states[state.session_id] = state


class NoLog:
    async def session_started(self, session_id: uuid.UUID) -> None:
        return None

    async def settled(self, session_id: uuid.UUID, turn_id: uuid.UUID) -> None:
        return None

    async def image_requested(self, session_id: uuid.UUID, image_id: uuid.UUID) -> bool:
        return False


def make(model: FakeModel, bus: FakeBus, store: FakeStore | None = None, **live: Any) -> Narrator:
    retry = RetryPolicy(max_deliver=3, backoff_s=0.001, backoff_max_s=0.002, heartbeat_s=10)
    settings = apply_override(Settings().live_defaults(), live)
    return Narrator(
        bus=bus,
        model=model,
        store=store or FakeStore(),
        story_log=NoLog(),
        settings=FixedSettings(settings),
        counter=ApproxTokenCounter(),
        config=NarratorConfig(retry=retry, image_style="oil", prices=DEFAULT_PRICES),
    )


def a_turn(session_id: uuid.UUID | None = None) -> TurnRequested:
    return TurnRequested(
        session_id=session_id or uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=InputType.SPEECH,
        text="open up",
    )


async def test_success_publishes_events_records_usage_cost_and_settings() -> None:
    bus, delivery, turn, store = FakeBus(), FakeDelivery(), a_turn(), FakeStore()
    await make(FakeModel(), bus, store, temperature="0.3").handle(turn, delivery)
    assert [e.type for e in bus.events] == [
        "narration.started",
        "narration.completed",
        "image.requested",
    ]
    completed: Any = bus.events[1]
    assert completed.text == TEXT and completed.usage.cached_tokens == 400
    # gpt-4.1-mini: 600 input at 0.40, 400 cached at 0.10, 100 output at 1.60 per 1M.
    assert completed.cost_usd == pytest.approx((600 * 0.40 + 400 * 0.10 + 100 * 1.60) / 1e6)
    assert completed.settings.temperature == 0.3 and completed.settings.model == "gpt-4.1-mini"
    assert [d.index for d in bus.live] == [0, 1]  # type: ignore[attr-defined]
    assert delivery.outcome == "ack"
    state = store.states[turn.session_id]
    assert state.turns[-1].narration == TEXT and state.is_settled(turn.turn_id, 10)


async def test_a_settled_turn_is_acked_without_calling_the_model() -> None:
    bus, model, store, turn = FakeBus(), FakeModel(), FakeStore(), a_turn()
    narrator = make(model, bus, store)
    await narrator.handle(turn, FakeDelivery(stream_seq=5))
    again = FakeDelivery(attempt=2, stream_seq=5)
    await narrator.handle(turn, again)
    assert len(model.calls) == 1 and again.outcome == "ack"


async def test_transient_errors_are_retried_in_place_then_complete() -> None:
    bus, turn = FakeBus(), a_turn()
    model = FakeModel(errors=[TransientModelError("provider_unavailable", "429")])
    delivery = FakeDelivery()
    await make(model, bus).handle(turn, delivery)
    assert len(model.calls) == 2 and delivery.outcome == "ack"
    assert [e.type for e in bus.events].count("narration.completed") == 1


async def test_last_attempt_fails_the_turn() -> None:
    bus, delivery = FakeBus(), FakeDelivery(attempt=2)
    errors: list[Exception] = [TransientModelError("x", "timed out") for _ in range(3)]
    model = FakeModel(errors=errors)
    await make(model, bus).handle(a_turn(), delivery)
    failed: Any = bus.events[-1]
    assert failed.type == "turn.failed" and failed.code == "provider_unavailable"
    assert len(model.calls) == 2  # attempts 2 and 3 of max_deliver=3
    assert delivery.outcome == "ack"


async def test_permanent_error_fails_the_turn_at_once() -> None:
    bus, delivery = FakeBus(), FakeDelivery()
    model = FakeModel(errors=[PermanentModelError("provider_auth", "bad key")])
    await make(model, bus).handle(a_turn(), delivery)
    assert bus.events[-1].code == "provider_auth"  # type: ignore[attr-defined]
    assert len(model.calls) == 1 and delivery.outcome == "ack"


async def test_image_policy_never_offers_no_tool_and_requests_no_image() -> None:
    bus, model = FakeBus(), FakeModel()
    await make(model, bus, image_policy="never").handle(a_turn(), FakeDelivery())
    assert not model.calls[0].offer_illustration
    assert "image.requested" not in [e.type for e in bus.events]


async def test_on_scene_change_follows_the_model() -> None:
    bus, store = FakeBus(), FakeStore()
    session = uuid.uuid4()
    narrator = make(FakeModel(), bus, store, image_policy="on_scene_change")
    await narrator.handle(a_turn(session), FakeDelivery(stream_seq=1))  # first turn: a picture
    await narrator.handle(a_turn(session), FakeDelivery(stream_seq=2))  # no change: none
    pictured = FakeModel(illustration=Illustration("A bell", ["Hesk"], ImageKind.PORTRAIT))
    narrator = make(pictured, bus, store, image_policy="on_scene_change")
    await narrator.handle(a_turn(session), FakeDelivery(stream_seq=3))
    images: list[Any] = [e for e in bus.events if e.type == "image.requested"]
    assert len(images) == 2
    assert images[1].prompt == "A bell, oil" and images[1].characters == ["Hesk"]


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(
        max_deliver=5, backoff_s=1, backoff_max_s=8, heartbeat_s=1, jitter=0.5, rng=lambda: 1.0
    )
    assert [policy.delay_s(n, None) for n in (1, 2, 3, 5)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay_s(1, 3.0) == 3.0


def test_cost_prices_cached_input_separately_and_knows_snapshots() -> None:
    prices = {"m": ModelPrice(input=2.0, cached_input=0.5, output=8.0)}
    usage = TokenUsage(input_tokens=1_000_000, cached_tokens=500_000, output_tokens=1_000_000)
    assert cost_usd(prices, "m", usage) == pytest.approx(1.0 + 0.25 + 8.0)
    assert cost_usd(prices, "m-2025-04-14", usage) == cost_usd(prices, "m", usage)
    assert cost_usd(prices, "other", usage) is None


def test_live_overrides_are_validated() -> None:
    base = Settings().live_defaults()
    changed = apply_override(base, {"model": "gpt-4.1", "image_policy": "never"})
    assert changed.model == "gpt-4.1" and changed.image_policy is ImagePolicy.NEVER
    with pytest.raises(ValueError):
        apply_override(base, {"temperature": "hot"})


async def test_dispatcher_keeps_each_session_in_order_and_runs_sessions_concurrently() -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def handle(item: str) -> None:
        if item == "a1":
            await gate.wait()  # session a is stuck (a retry, say)
        seen.append(item)
        if item == "b2":
            gate.set()

    dispatcher: SessionDispatcher[str] = SessionDispatcher(handle)
    for session, item in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]:
        dispatcher.submit(session, item)
    async with asyncio.timeout(2):
        while dispatcher.active_sessions:
            await asyncio.sleep(0.001)
    assert seen == ["b1", "b2", "a1", "a2"]


def test_settings_read_documented_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, Any] = {
        "NATS_URL": "nats://n:4222",
        "OPENAI_BASE_URL": "http://o/v1",
        "NARRATOR_MODEL": "gpt-x",
        "NARRATOR_API": "chat",
        "NARRATOR_CONCURRENCY": "50",
        "NARRATOR_CONTEXT_BUDGET_TOKENS": "3000",
        "NARRATOR_IMAGE_POLICY": "on_scene_change",
        "NARRATOR_PRICES": '{"gpt-x": {"input": 1, "output": 2}}',
        "LOG_LEVEL": "DEBUG",  # not ours: only NARRATOR_LOG_LEVEL is
    }
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.nats_url, settings.openai_base_url, settings.model) == (
        "nats://n:4222",
        "http://o/v1",
        "gpt-x",
    )
    assert settings.api == "chat" and settings.concurrency == 50
    assert settings.context_budget_tokens == 3000
    assert settings.image_policy is ImagePolicy.ON_SCENE_CHANGE
    assert settings.prices["gpt-x"].output == 2
    assert settings.openai_api_key.get_secret_value() == "sk-sandbox"
    assert settings.log_level == "INFO"
