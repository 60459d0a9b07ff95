"""`SessionHistory` mirrors the narrator: a real `Narrator` (fake model, scratch store) tells a
session with folds, a failed turn and a restore; every prompt the model received is rebuilt
from the published events alone, byte for byte, and proven by the recorded sha256."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from taleforge.cli.replay.scratch import ScratchBus, ScratchDelivery, ScratchStore
from taleforge.contracts import (
    Envelope,
    InputType,
    MemoryFolded,
    NarrationCompleted,
    SessionRestored,
    SessionStarted,
    TokenUsage,
    TurnRequested,
)
from taleforge.contracts.events import ImagePolicy, ScenarioSnapshot
from taleforge.narrator.history import Check, HistoryGap, session_history
from taleforge.narrator.live_settings import FixedSettings, LiveSettings
from taleforge.narrator.model import ModelCall, ModelReply, OnDelta, PermanentModelError
from taleforge.narrator.narration import Narrator, NarratorConfig, RetryPolicy
from taleforge.narrator.pricing import DEFAULT_PRICES
from taleforge.narrator.prompting import SUMMARY_HEADING, Prompt
from taleforge.narrator.recording import prompt_bytes
from taleforge.narrator.tokens import ApproxTokenCounter


@dataclass
class EchoModel:
    """Narrates a long beat per input; refuses inputs containing 'forbidden'."""

    prompts: dict[str, Prompt] = field(default_factory=dict)  # turn id -> last prompt

    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        self.prompts[call.metadata["turn_id"]] = prompt
        if "forbidden" in prompt.player_text:
            raise PermanentModelError("provider_rejected", "no")
        text = f"You answer {prompt.player_text!r}. " + "The tide rises over the stones. " * 12
        await on_delta(text)
        return ModelReply(text, call.model, TokenUsage(input_tokens=9, output_tokens=9), "r")

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        summary = f"Summary of {text.count('Turn ')} turns: " + text[-80:]
        return ModelReply(summary, call.model, TokenUsage(input_tokens=5, output_tokens=5), "s")


class Session:
    def __init__(self) -> None:
        self.bus = ScratchBus(None, "unit")
        self.store = ScratchStore()
        self.model = EchoModel()
        live = LiveSettings(
            model="m",
            max_output_tokens=100,
            context_budget_tokens=700,  # folds every few turns
            summary_model="s",
            summary_max_output_tokens=50,
            image_policy=ImagePolicy.NEVER,
        )
        self.narrator = Narrator(
            bus=self.bus,
            model=self.model,
            store=self.store,
            story_log=NoLog(),
            settings=FixedSettings(live),
            counter=ApproxTokenCounter(),
            config=NarratorConfig(
                retry=RetryPolicy(max_deliver=1, backoff_s=0, backoff_max_s=0, heartbeat_s=60),
                image_style="ink",
                prices=DEFAULT_PRICES,
            ),
        )
        self.started = SessionStarted(
            session_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            scenario_id="s",
            title="The Drowned Bell",
            opening="Fog rolls over the harbour.",
            scenario=ScenarioSnapshot(world="A drowned city.", rules=["The tide never lies."]),
        )
        self.log: list[Envelope] = []  # the session's stream, in order
        self.turns: list[TurnRequested] = []

    async def start(self) -> None:
        self.log.append(self.started)
        await self.narrator.handle(self.started, ScratchDelivery())

    async def turn(self, text: str) -> TurnRequested:
        turn = TurnRequested(
            session_id=self.started.session_id,
            user_id=self.started.user_id,
            turn_id=uuid.uuid4(),
            input_type=InputType.ACTION,
            text=text,
        )
        self.turns.append(turn)
        self.log.append(turn)
        published = len(self.bus.by_turn[turn.turn_id])
        await self.narrator.handle(turn, ScratchDelivery())
        self.log += self.bus.by_turn[turn.turn_id][published:]
        return turn

    async def restore(self, to_turn: TurnRequested | None) -> None:
        """As the narrator's restorer does: the state rebuilt from the log up to the restore."""
        event = SessionRestored(
            session_id=self.started.session_id,
            user_id=self.started.user_id,
            turn_id=None if to_turn is None else to_turn.turn_id,
            save_id=uuid.uuid4(),
        )
        self.log.append(event)
        await self.store.save(session_history(self.started.session_id, self.log).state)


class NoLog:
    async def session_started(self, session_id: uuid.UUID) -> None:
        return None

    async def settled(self, session_id: uuid.UUID, turn_id: uuid.UUID) -> None:
        return None

    async def image_requested(self, session_id: uuid.UUID, image_id: uuid.UUID) -> bool:
        return False


async def test_every_prompt_is_rebuilt_exactly_through_folds_failures_and_a_restore() -> None:
    session = Session()
    await session.start()
    for n in range(4):
        await session.turn(f"I search stone number {n}")
    refused = await session.turn("I open the forbidden door")
    await session.turn("I climb the belfry")
    kept = session.turns[1]
    await session.restore(kept)  # back to the second turn: turns 3..6 are undone
    after_restore = await session.turn("I take the other path")
    await session.turn("I ring the bell")

    assert any(isinstance(e, MemoryFolded) for e in session.log), "the budget forces folds"
    history = session_history(session.started.session_id, session.log)
    folded_prompts = 0
    for turn in session.turns:
        rebuilt = history.prompt(turn.turn_id)
        sent = session.model.prompts[str(turn.turn_id)]
        assert prompt_bytes(rebuilt.prompt) == prompt_bytes(sent)
        if turn is refused:
            assert rebuilt.check is Check.UNRECORDED  # failed turns record no prompt
        else:
            assert rebuilt.check is Check.VERIFIED, rebuilt.explain()
        folded_prompts += sent.messages[0]["content"].startswith(SUMMARY_HEADING)
    assert folded_prompts >= 2

    # After the restore the history is the kept branch: the undone turns are gone from it.
    sent_after = session.model.prompts[str(after_restore.turn_id)]
    history_text = " ".join(m["content"] for m in sent_after.messages)
    assert "stone number 3" not in history_text and "belfry" not in history_text
    assert "stone number 1" in history_text
    assert history.view(refused.turn_id).number == 5
    assert history.view(after_restore.turn_id).before is not None


async def test_a_wrong_record_or_another_format_is_not_passed_off_as_exact() -> None:
    session = Session()
    await session.start()
    turn = await session.turn("I knock")
    completed = next(e for e in session.log if isinstance(e, NarrationCompleted))
    assert completed.prompt is not None
    index = session.log.index(completed)

    for record, check in (
        (completed.prompt.model_copy(update={"sha256": "0" * 64}), Check.MISMATCH),
        (completed.prompt.model_copy(update={"format": "v1"}), Check.OTHER_FORMAT),
        (None, Check.UNRECORDED),
    ):
        log = list(session.log)
        log[index] = completed.model_copy(update={"prompt": record})
        rebuilt = session_history(session.started.session_id, log).prompt(turn.turn_id)
        assert rebuilt.check is check
        assert rebuilt.explain()

    # A mismatch says where the rebuilt inputs differ from the narrator's record.
    log = list(session.log)
    log[index] = completed.model_copy(
        update={"prompt": completed.prompt.model_copy(update={"sha256": "0" * 64, "turns": 7})}
    )
    explained = session_history(session.started.session_id, log).prompt(turn.turn_id).explain()
    assert "0 recent turns from None, recorded 7 from None" in explained


async def test_a_narration_without_its_request_is_a_gap() -> None:
    session = Session()
    await session.start()
    turn = await session.turn("I knock")
    without_request = [e for e in session.log if e is not turn]
    with pytest.raises(HistoryGap, match="request is missing"):
        session_history(session.started.session_id, without_request)
