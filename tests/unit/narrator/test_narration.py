"""The Narrator's decisions, with hand-written fakes for the bus, model and delivery."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from taleforge.contracts import Envelope, InputType, TokenUsage, TurnRequested
from taleforge.narrator.model import (
    ModelReply,
    OnDelta,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.narration import Narrator, RetryPolicy, image_prompt, image_seed
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings

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
    outcome: str | None = None
    delay_s: float | None = None

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nack(self, delay_s: float) -> None:
        self.outcome, self.delay_s = "nack", delay_s

    async def term(self) -> None:
        self.outcome = "term"

    async def in_progress(self) -> None:
        pass


@dataclass
class FakeModel:
    error: Exception | None = None
    prompts: list[Prompt] = field(default_factory=list)

    async def narrate(
        self, prompt: Prompt, *, on_delta: OnDelta, metadata: dict[str, str]
    ) -> ModelReply:
        self.prompts.append(prompt)
        await on_delta("The gate ")
        if self.error:
            raise self.error
        await on_delta(TEXT.removeprefix("The gate "))
        usage = TokenUsage(input_tokens=10, cached_tokens=4, output_tokens=2, total_tokens=12)
        return ModelReply(text=TEXT, model="m-1", usage=usage, response_id="resp_1")


def make(model: FakeModel, bus: FakeBus, max_deliver: int = 3) -> Narrator:
    retry = RetryPolicy(max_deliver=max_deliver, backoff_s=1, backoff_max_s=8, heartbeat_s=10)
    return Narrator(bus=bus, model=model, model_name="m-1", retry=retry, image_style="oil")


def a_turn() -> TurnRequested:
    ids = {"session_id": uuid.uuid4(), "user_id": uuid.uuid4(), "turn_id": uuid.uuid4()}
    return TurnRequested(input_type=InputType.SPEECH, text="open up", **ids)


async def test_success_publishes_started_completed_and_image_then_acks() -> None:
    bus, delivery, turn = FakeBus(), FakeDelivery(), a_turn()
    await make(FakeModel(), bus).handle(turn, delivery)
    assert [e.type for e in bus.events] == [
        "narration.started",
        "narration.completed",
        "image.requested",
    ]
    started, completed, image = bus.events
    assert completed.text == TEXT and completed.usage.cached_tokens == 4  # type: ignore[attr-defined]
    assert completed.event_id == uuid.uuid5(turn.turn_id, "narration.completed")
    assert image.image_id == uuid.uuid5(turn.turn_id, "image:scene")  # type: ignore[attr-defined]
    assert image.prompt == "The gate groans open, oil"  # type: ignore[attr-defined]
    assert [d.index for d in bus.live] == [0, 1]  # type: ignore[attr-defined]
    assert delivery.outcome == "ack"


async def test_same_turn_gets_the_same_event_ids_on_redelivery() -> None:
    turn, first, second = a_turn(), FakeBus(), FakeBus()
    await make(FakeModel(), first).handle(turn, FakeDelivery(attempt=1))
    await make(FakeModel(), second).handle(turn, FakeDelivery(attempt=2))
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]


async def test_transient_error_naks_with_backoff_honouring_retry_after() -> None:
    bus, turn = FakeBus(), a_turn()
    error = TransientModelError("provider_unavailable", "429", retry_after_s=5.0)
    delivery = FakeDelivery(attempt=1)
    await make(FakeModel(error=error), bus).handle(turn, delivery)
    assert (delivery.outcome, delivery.delay_s) == ("nack", 5.0)
    assert [e.type for e in bus.events] == ["narration.started"]  # no partial completion
    delivery = FakeDelivery(attempt=2)
    await make(FakeModel(error=TransientModelError("x", "y")), bus).handle(turn, delivery)
    assert delivery.delay_s == 2.0


async def test_last_delivery_fails_the_turn() -> None:
    bus, delivery = FakeBus(), FakeDelivery(attempt=3)
    await make(FakeModel(error=TransientModelError("x", "timed out")), bus).handle(
        a_turn(), delivery
    )
    failed = bus.events[-1]
    assert failed.type == "turn.failed" and failed.code == "provider_unavailable"  # type: ignore[attr-defined]
    assert delivery.outcome == "ack"


async def test_permanent_error_fails_the_turn_at_once() -> None:
    bus, delivery = FakeBus(), FakeDelivery(attempt=1)
    error = PermanentModelError("provider_auth", "bad key")
    await make(FakeModel(error=error), bus).handle(a_turn(), delivery)
    assert bus.events[-1].code == "provider_auth"  # type: ignore[attr-defined]
    assert delivery.outcome == "ack"


def test_image_prompt_and_seed_are_derived_from_the_turn() -> None:
    assert image_prompt("A storm breaks! Rain.", "ink") == "A storm breaks, ink"
    assert image_prompt("", "ink").endswith(", ink")
    turn_id = uuid.uuid4()
    assert image_seed(turn_id) == image_seed(turn_id) >= 0


def test_settings_read_documented_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, Any] = {
        "NATS_URL": "nats://n:4222",
        "OPENAI_BASE_URL": "http://o/v1",
        "NARRATOR_MODEL": "gpt-x",
        "NARRATOR_MAX_DELIVER": "7",
        "NARRATOR_STALL_TIMEOUT_S": "3",
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
    assert settings.max_deliver == 7 and settings.stall_timeout_s == 3
    assert settings.openai_api_key.get_secret_value() == "sk-sandbox"
