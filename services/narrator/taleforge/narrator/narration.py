"""Narrating one session's messages: story state in, events out, every failure decided.

Every stream event for a turn has an id derived from the turn (`uuid5(turn_id, type)`), so
a turn handled again republishes the same ids and JetStream keeps only the first of each.
A turn already settled (in the session state, or — after a crash between publishing and
saving — as the session's last narration on the stream) is acknowledged without calling
the model again.

Retries happen here, in order: while a turn waits for its next try (exponential backoff
with jitter, at least the provider's retry-after), the session's later turns wait behind
it, and other sessions carry on. The delivery count continues the attempt count, so a
restart mid-retry resumes where it was; the last allowed attempt publishes `TurnFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from taleforge.contracts import (
    Envelope,
    NarrationCompleted,
    NarrationDelta,
    NarrationStarted,
    SessionStarted,
    TurnFailed,
    TurnRequested,
)
from taleforge.contracts.events import IllustrationProposal, ImagePolicy, NarrationSettings
from taleforge.narrator.images import plan_image
from taleforge.narrator.live_settings import LiveSettings, SettingsSource
from taleforge.narrator.memory import SUMMARY_INSTRUCTIONS, plan_fold, summary_request
from taleforge.narrator.model import (
    Illustration,
    ModelCall,
    ModelReply,
    NarrationModel,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.pricing import ModelPrice, cost_usd
from taleforge.narrator.prompting import build_prompt
from taleforge.narrator.recording import fold_event, prompt_record
from taleforge.narrator.story import SessionState
from taleforge.narrator.tokens import TokenCounter

if TYPE_CHECKING:
    from taleforge.narrator.settings import Settings

log = logging.getLogger(__name__)


class Bus(Protocol):
    async def publish_event(self, event: Envelope) -> None:
        """Publish to the stream and wait for the PubAck."""
        ...

    async def publish_live(self, event: Envelope) -> None:
        """Publish on core NATS (fast, not kept)."""
        ...


class Delivery(Protocol):
    """One JetStream delivery, as the narrator needs to settle it."""

    attempt: int
    stream_seq: int | None
    delivered_at: float  # time.monotonic() when it was handed to the narrator

    async def ack(self) -> None: ...
    async def nack(self, delay_s: float) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


class SessionStore(Protocol):
    async def load(self, session_id: uuid.UUID) -> SessionState | None: ...
    async def save(self, state: SessionState) -> None: ...


class StoryLog(Protocol):
    async def session_started(self, session_id: uuid.UUID) -> SessionStarted | None: ...
    async def settled(
        self, session_id: uuid.UUID, turn_id: uuid.UUID
    ) -> NarrationCompleted | TurnFailed | None: ...
    async def image_requested(self, session_id: uuid.UUID, image_id: uuid.UUID) -> bool: ...


# (turn_id, delivered_at, first_delta_published_at), monotonic seconds: for benchmarks.
FirstDeltaObserver = Callable[[uuid.UUID, float, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    max_deliver: int
    backoff_s: float
    backoff_max_s: float
    heartbeat_s: float
    jitter: float = 0.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        backoff: float = min(self.backoff_s * 2.0 ** (attempt - 1), self.backoff_max_s)
        # Jitter spreads retries of many sessions so they do not hit the provider together.
        backoff *= 1.0 - self.jitter * self.rng()
        return max(backoff, retry_after_s or 0.0)


@dataclass(frozen=True)
class NarratorConfig:
    retry: RetryPolicy
    image_style: str
    prices: dict[str, ModelPrice]
    api: str = "responses"
    fold_keep_fraction: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> NarratorConfig:
        """The configuration the service runs with (the replay CLI re-narrates with it too)."""
        return cls(
            retry=RetryPolicy(
                max_deliver=settings.max_deliver,
                backoff_s=settings.retry_backoff_s,
                backoff_max_s=settings.retry_backoff_max_s,
                heartbeat_s=settings.ack_wait_s / 3,
                jitter=settings.retry_jitter,
            ),
            image_style=settings.image_style,
            prices=settings.prices,
            api=settings.api,
            fold_keep_fraction=settings.fold_keep_fraction,
        )


def event_id(turn_id: uuid.UUID, name: str) -> uuid.UUID:
    return uuid.uuid5(turn_id, name)


@contextlib.asynccontextmanager
async def heartbeats(delivery: Delivery, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream the message is still being worked on, so ack_wait does not expire."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await delivery.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Narrator:
    def __init__(
        self,
        *,
        bus: Bus,
        model: NarrationModel,
        store: SessionStore,
        story_log: StoryLog,
        settings: SettingsSource,
        counter: TokenCounter,
        config: NarratorConfig,
        observer: FirstDeltaObserver | None = None,
    ) -> None:
        self._bus = bus
        self._model = model
        self._store = store
        self._log = story_log
        self._settings = settings
        self._counter = counter
        self._config = config
        self._retry = config.retry
        self._observer = observer

    async def handle(self, event: Envelope, delivery: Delivery) -> None:
        if isinstance(event, SessionStarted):
            await self._session_started(event)
            await delivery.ack()
        elif isinstance(event, TurnRequested):
            await self._turn(event, delivery)
        else:
            log.warning("ignoring %s: not for the narrator", event.type)
            await delivery.ack()

    async def _session_started(self, event: SessionStarted) -> None:
        if await self._store.load(event.session_id) is None:
            await self._store.save(SessionState.started(event))
            log.info("session %s started (%s)", event.session_id, event.scenario_id)

    async def _state_for(self, session_id: uuid.UUID) -> SessionState:
        """The session's state; rebuilt from its SessionStarted if the bucket lacks it."""
        state = await self._store.load(session_id)
        if state is not None:
            return state
        started = await self._log.session_started(session_id)
        if started is None:
            log.warning("session %s has no SessionStarted; no scenario to narrate", session_id)
            return SessionState(session_id=session_id)
        return SessionState.started(started)

    async def _turn(self, turn: TurnRequested, delivery: Delivery) -> None:
        state = await self._state_for(turn.session_id)
        if state.is_settled(turn.turn_id, delivery.stream_seq):
            log.info("turn %s was already settled; acknowledging it again", turn.turn_id)
            await delivery.ack()
            return
        if delivery.attempt > 1:
            # Settled, but we stopped before saving the state (crash, lost ack)?
            outcome = await self._log.settled(turn.session_id, turn.turn_id)
            if outcome is not None:
                log.info(
                    "turn %s already has %s; not narrating it again", turn.turn_id, outcome.type
                )
                if isinstance(outcome, NarrationCompleted):
                    await self._request_lost_images(turn, state, outcome)
                    state = state.with_turn(
                        turn.turn_id, turn.input_type, turn.text, outcome.text, delivery.stream_seq
                    )
                else:
                    state = state.with_failed_turn(turn.turn_id, delivery.stream_seq)
                await self._store.save(state)
                await delivery.ack()
                return
        async with heartbeats(delivery, self._retry.heartbeat_s):
            state = await self._attempts(turn, state, delivery)
            await self._store.save(state)
        await delivery.ack()

    async def _attempts(
        self, turn: TurnRequested, state: SessionState, delivery: Delivery
    ) -> SessionState:
        attempt = delivery.attempt
        while True:
            try:
                return await self._narrate(turn, state, attempt, delivery)
            except PermanentModelError as exc:
                log.warning("turn %s failed for good: %s", turn.turn_id, exc)
                outcome = await self._fail(turn, exc.code, exc.reason, None)
                return self._after(state, turn, outcome, delivery)
            except Exception as exc:
                if isinstance(exc, TransientModelError):
                    reason, retry_after = exc.reason, exc.retry_after_s
                else:
                    log.exception("turn %s hit an unexpected error", turn.turn_id)
                    reason, retry_after = f"internal error: {type(exc).__name__}", None
                if attempt >= self._retry.max_deliver:
                    log.warning(
                        "turn %s failed after %d attempts: %s", turn.turn_id, attempt, reason
                    )
                    outcome = await self._fail(
                        turn,
                        "provider_unavailable",
                        f"The storyteller could not be reached after {attempt} attempts "
                        f"({reason}).",
                        delivery.stream_seq,
                    )
                    return self._after(state, turn, outcome, delivery)
                delay = self._retry.delay_s(attempt, retry_after)
                log.info(
                    "turn %s attempt %d failed (%s); retrying in %.2f s",
                    turn.turn_id,
                    attempt,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1
                # A fold done before the failure is saved: reload so it is not done twice.
                state = await self._store.load(turn.session_id) or state

    async def _fold_if_needed(
        self, turn: TurnRequested, state: SessionState, live: LiveSettings
    ) -> SessionState:
        plan = plan_fold(
            state,
            turn,
            self._counter,
            budget_tokens=live.context_budget_tokens,
            summary_tokens=live.summary_max_output_tokens,
            keep_fraction=self._config.fold_keep_fraction,
        )
        if not plan.turns:
            return state
        call = ModelCall(
            model=live.summary_model,
            max_output_tokens=live.summary_max_output_tokens,
            metadata={"session_id": str(turn.session_id), "purpose": "summary"},
        )
        reply = await self._model.summarize(
            SUMMARY_INSTRUCTIONS, summary_request(state, plan.turns), call
        )
        folded = state.with_summary(reply.text.strip(), plan.turns)
        # Recorded before it is saved: later prompts are rebuilt from it (show-prompt, replay).
        await self._bus.publish_event(
            fold_event(turn, folded, plan.turns, reply, self._config.prices)
        )
        # Saved at once: the folded turns are gone from the history, never summarised again.
        await self._store.save(folded)
        log.info(
            "session %s: folded turns up to %d into the summary (prompt was %d tokens, budget %d)",
            turn.session_id,
            folded.summarized_through,
            plan.prompt_tokens,
            live.context_budget_tokens,
        )
        return folded

    async def _narrate(
        self, turn: TurnRequested, state: SessionState, attempt: int, delivery: Delivery
    ) -> SessionState:
        turn_id = turn.turn_id
        common = {"session_id": turn.session_id, "user_id": turn.user_id, "turn_id": turn_id}
        live = await self._settings.current()
        await self._bus.publish_event(
            NarrationStarted(
                event_id=event_id(turn_id, NarrationStarted.TYPE),
                model=live.model,
                attempt=attempt,
                **common,
            )
        )
        state = await self._fold_if_needed(turn, state, live)
        prompt = build_prompt(turn, state)
        policy = live.image_policy or state.scenario.image_policy
        call = ModelCall(
            model=live.model,
            max_output_tokens=live.max_output_tokens,
            temperature=live.temperature,
            offer_illustration=policy is not ImagePolicy.NEVER,
            metadata={"session_id": str(turn.session_id), "turn_id": str(turn_id)},
        )
        started = time.monotonic()
        first_token_at: float | None = None
        index = 0

        async def on_delta(text: str) -> None:
            nonlocal first_token_at, index
            live_delta = NarrationDelta(
                event_id=event_id(turn_id, f"narration.delta:{attempt}:{index}"),
                index=index,
                delta=text,
                attempt=attempt,
                **common,
            )
            index += 1
            await self._bus.publish_live(live_delta)
            if first_token_at is None:
                first_token_at = time.monotonic()
                if self._observer is not None:
                    self._observer(turn_id, delivery.delivered_at, first_token_at)

        reply = await self._model.narrate(prompt, call, on_delta=on_delta)
        finished = time.monotonic()
        cost = cost_usd(self._config.prices, reply.model, reply.usage)
        if cost is None:
            cost = cost_usd(self._config.prices, live.model, reply.usage)
        image = plan_image(turn, state, reply, policy, self._config.image_style)
        await self._bus.publish_event(
            NarrationCompleted(
                event_id=event_id(turn_id, NarrationCompleted.TYPE),
                text=reply.text,
                model=reply.model,
                usage=reply.usage,
                response_id=reply.response_id,
                time_to_first_token_ms=None
                if first_token_at is None
                else (first_token_at - started) * 1000,
                duration_ms=(finished - started) * 1000,
                cost_usd=cost,
                settings=NarrationSettings(
                    api=self._config.api,
                    model=live.model,
                    temperature=live.temperature,
                    max_output_tokens=live.max_output_tokens,
                    context_budget_tokens=live.context_budget_tokens,
                    image_policy=policy,
                ),
                image_ids=[image.image_id] if image is not None else [],
                illustration=None
                if reply.illustration is None
                else IllustrationProposal(
                    prompt=reply.illustration.prompt,
                    kind=reply.illustration.kind,
                    characters=reply.illustration.characters,
                ),
                prompt=prompt_record(prompt, state, self._counter),
                **common,
            )
        )
        if image is not None:
            await self._bus.publish_event(image)
        log.info(
            "narrated turn %s (%d chars; tokens in %d, cached %d, out %d; $%s)",
            turn_id,
            len(reply.text),
            reply.usage.input_tokens,
            reply.usage.cached_tokens,
            reply.usage.output_tokens,
            "?" if cost is None else f"{cost:.6f}",
        )
        return state.with_turn(turn_id, turn.input_type, turn.text, reply.text, delivery.stream_seq)

    async def _request_lost_images(
        self, turn: TurnRequested, state: SessionState, narration: NarrationCompleted
    ) -> None:
        """Killed between NarrationCompleted and ImageRequested? Request the picture now,
        rebuilt from the narration and the model's recorded proposal (same ids)."""
        for image_id in narration.image_ids or []:
            if await self._log.image_requested(turn.session_id, image_id):
                continue
            proposal = narration.illustration
            reply = ModelReply(
                text=narration.text,
                model=narration.model,
                usage=narration.usage,
                response_id=narration.response_id,
                illustration=None
                if proposal is None
                else Illustration(
                    prompt=proposal.prompt, characters=list(proposal.characters), kind=proposal.kind
                ),
            )
            # An image was planned (image_ids says so): only the policy's "whether" is moot.
            image = plan_image(turn, state, reply, ImagePolicy.EVERY_TURN, self._config.image_style)
            if image is None or image.image_id != image_id:
                log.error(
                    "turn %s: image %s was never requested and cannot be rebuilt",
                    turn.turn_id,
                    image_id,
                )
                continue
            log.warning(
                "turn %s: image %s was never requested; requesting it now", turn.turn_id, image_id
            )
            await self._bus.publish_event(image)

    @staticmethod
    def _after(
        state: SessionState,
        turn: TurnRequested,
        outcome: NarrationCompleted | TurnFailed | None,
        delivery: Delivery,
    ) -> SessionState:
        """The state once the turn failed now (`outcome` None) or had an outcome already."""
        if isinstance(outcome, NarrationCompleted):
            return state.with_turn(
                turn.turn_id, turn.input_type, turn.text, outcome.text, delivery.stream_seq
            )
        return state.with_failed_turn(turn.turn_id, delivery.stream_seq)

    async def give_up(self, turn: TurnRequested, stream_seq: int, deliveries: int) -> bool:
        """JetStream gave up delivering `turn` (MAX_DELIVERIES, e.g. killed on its last
        delivery): fail it for the player unless it is settled. True if it was failed now."""
        state = await self._store.load(turn.session_id)
        if state is not None and turn.turn_id in state.settled_turn_ids:
            return False
        outcome = await self._fail(
            turn,
            "max_deliveries",
            f"The storyteller could not finish this turn after {deliveries} attempts.",
            stream_seq,
        )
        return outcome is None

    async def _fail(
        self, turn: TurnRequested, code: str, reason: str, request_seq: int | None
    ) -> NarrationCompleted | TurnFailed | None:
        """Publish the turn's TurnFailed (None) unless the stream already holds its outcome
        (returned: a narration published before a crash must not be followed by a failure)."""
        outcome = await self._log.settled(turn.session_id, turn.turn_id)
        if outcome is not None:
            log.info("turn %s already has %s; no turn.failed", turn.turn_id, outcome.type)
            return outcome
        await self._bus.publish_event(
            TurnFailed(
                event_id=event_id(turn.turn_id, TurnFailed.TYPE),
                session_id=turn.session_id,
                user_id=turn.user_id,
                turn_id=turn.turn_id,
                code=code,
                reason=reason,
                request_seq=request_seq,
            )
        )
        return None
