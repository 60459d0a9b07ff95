"""Re-narrate a recorded session with the narrator's own code, on scratch adapters.

The session's history is rebuilt from the log (`taleforge.narrator.history`). A scratch
`Narrator` starts from the state the original narrator had when it took turn N
(`--from-turn`, default 1), then receives the session's recorded narrator inputs from that
turn on — the same events its consumer would get — one at a time, in stream order. Each turn
runs with the settings it was originally narrated with (model, temperature, token limits,
context budget, image policy, from `NarrationCompleted.settings`), except what the caller
overrides (`model`, `temperature`). The new narrations feed the following turns, as they
would have live: this is the story as the other model would have told it from turn N.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client

from taleforge.cli.progress import Progress
from taleforge.cli.replay.scratch import (
    ScratchBus,
    ScratchDelivery,
    ScratchStore,
    ScratchStoryLog,
    TurnSettings,
    replay_prefix,
)
from taleforge.cli.stream import (
    NotInStream,
    check_session_complete,
    connect,
    retention,
    session_events,
)
from taleforge.contracts import (
    MemoryFolded,
    NarrationCompleted,
    SessionRestored,
    TokenUsage,
    TurnFailed,
    TurnRequested,
)
from taleforge.contracts.envelope import Envelope
from taleforge.narrator.adapters.consumer import NARRATOR_FILTERS
from taleforge.narrator.adapters.openai_client import OpenAINarrationModel
from taleforge.narrator.history import (
    HistoryGap,
    SessionHistory,
    TurnView,
    rewind,
    session_history,
)
from taleforge.narrator.live_settings import LiveSettings
from taleforge.narrator.model import NarrationModel
from taleforge.narrator.narration import Narrator, NarratorConfig
from taleforge.narrator.settings import Settings
from taleforge.narrator.story import SessionState
from taleforge.narrator.tokens import make_counter

# The event types the narrator's consumer receives (story.events.*.<type>).
NARRATOR_INPUTS = frozenset(f.split(".", 3)[3] for f in NARRATOR_FILTERS)


@dataclass
class Version:
    """One telling of a turn: the narration (or failure), its model, tokens and cost."""

    text: str | None = None
    model: str | None = None
    usage: TokenUsage | None = None
    cost_usd: float | None = None
    failed: str | None = None
    folds: list[MemoryFolded] = field(default_factory=list)  # summaries made for this turn

    @classmethod
    def of(cls, outcome: Envelope | None, folds: list[MemoryFolded]) -> Version:
        if isinstance(outcome, NarrationCompleted):
            return cls(
                text=outcome.text,
                model=outcome.model,
                usage=outcome.usage,
                cost_usd=outcome.cost_usd,
                folds=folds,
            )
        if isinstance(outcome, TurnFailed):
            return cls(failed=f"{outcome.code}: {outcome.reason}", folds=folds)
        return cls(failed="not narrated", folds=folds)

    @property
    def summary_cost_usd(self) -> float:
        return sum(f.cost_usd or 0.0 for f in self.folds)


@dataclass
class Comparison:
    number: int
    request: TurnRequested
    original: Version
    replay: Version


@dataclass
class ReplayReport:
    session_id: uuid.UUID
    run_id: str
    from_turn: int
    model: str | None
    temperature: float | None
    planned: int = 0
    turns: list[Comparison] = field(default_factory=list)
    interrupted: bool = False

    @property
    def subjects(self) -> str:
        return f"{replay_prefix(self.run_id)}.>"


def turn_settings(
    base: LiveSettings,
    view: TurnView,
    *,
    model: str | None,
    temperature: float | None,
) -> LiveSettings:
    """The settings the turn was narrated with, then the caller's overrides."""
    values = base.model_dump()
    recorded = view.completed.settings if view.completed is not None else None
    if recorded is not None:
        values.update(
            {
                "model": recorded.model,
                "temperature": recorded.temperature,
                "image_policy": recorded.image_policy,
            }
        )
        if recorded.max_output_tokens is not None:
            values["max_output_tokens"] = recorded.max_output_tokens
        if recorded.context_budget_tokens is not None:
            values["context_budget_tokens"] = recorded.context_budget_tokens
    if model is not None:
        values["model"] = model
    if temperature is not None:
        values["temperature"] = temperature
    return LiveSettings.model_validate(values)


def scratch_narrator(
    settings: Settings,
    llm: NarrationModel,
    bus: ScratchBus,
    store: ScratchStore,
    history: SessionHistory,
    live: TurnSettings,
) -> Narrator:
    return Narrator(
        bus=bus,
        model=llm,
        store=store,
        story_log=ScratchStoryLog(history.started),
        settings=live,
        counter=make_counter(settings.tokenizer),
        config=NarratorConfig.from_settings(settings),
    )


def _recorded_api(history: SessionHistory, settings: Settings) -> Settings:
    """The narrator settings with the API (responses | chat) the session was narrated with."""
    for view in history.turns:
        recorded = view.completed.settings if view.completed is not None else None
        if recorded is not None and recorded.api in ("responses", "chat"):
            return settings.model_copy(update={"api": recorded.api})
    return settings


async def renarrate(
    nats_url: str,
    session_id: uuid.UUID,
    report: ReplayReport,
    *,
    settings: Settings,
    llm: NarrationModel | None = None,
    on_turn: Callable[[Comparison], None] | None = None,
    progress: bool = True,
) -> ReplayReport:
    """Fill `report` turn by turn (so an interruption keeps what was done)."""
    async with connect(nats_url) as (nc, js):
        kept = await retention(js)
        rows = await session_events(js, session_id)
        check_session_complete(session_id, rows, kept)
        history = session_history(session_id, [r.event for r in rows if r.event is not None])
        views = [v for v in history.turns if v.number >= report.from_turn]
        if not views:
            raise NotInStream(
                f"session {session_id} has {len(history.turns)} turns: none from turn "
                f"{report.from_turn} on"
            )
        report.planned = len(views)
        first = views[0]
        assert first.request is not None
        start_seq = next(r.seq for r in rows if r.event is first.request)
        inputs = [
            r.event
            for r in rows
            if r.seq >= start_seq
            and r.event is not None
            and r.event.type in NARRATOR_INPUTS
            and r.event.type != "session.started"
        ]
        settings = _recorded_api(history, settings)
        await _run(nc, history, first, inputs, report, settings, llm, on_turn, progress)
    return report


async def _run(
    nc: Client,
    history: SessionHistory,
    first: TurnView,
    inputs: Sequence[Envelope],
    report: ReplayReport,
    settings: Settings,
    llm: NarrationModel | None,
    on_turn: Callable[[Comparison], None] | None,
    progress: bool,
) -> None:
    own_model = OpenAINarrationModel(settings) if llm is None else None
    model: NarrationModel = llm or own_model  # type: ignore[assignment]
    bus = ScratchBus(nc, report.run_id)
    store = ScratchStore()
    await store.save(first.before or history.state)
    base = settings.live_defaults()
    live = TurnSettings(base)
    narrator = scratch_narrator(settings, model, bus, store, history, live)
    views = {v.turn_id: v for v in history.turns}
    # The scratch story right after each re-narrated turn: where a loaded save goes back to.
    after: dict[uuid.UUID, SessionState] = {}
    try:
        with Progress(
            total=report.planned, desc="re-narrating", unit="turn", enabled=progress
        ) as bar:
            for event in inputs:
                if isinstance(event, SessionRestored):
                    await _restore(event, store, history, after)
                    continue
                view = views.get(event.turn_id) if event.turn_id is not None else None
                if isinstance(event, TurnRequested) and view is not None:
                    live.settings = turn_settings(
                        base, view, model=report.model, temperature=report.temperature
                    )
                await narrator.handle(event, ScratchDelivery())
                if not isinstance(event, TurnRequested) or view is None:
                    continue
                after[view.turn_id] = store.states[history.session_id]
                comparison = _compare(view, bus.by_turn.get(view.turn_id, []))
                report.turns.append(comparison)
                if on_turn is not None:
                    on_turn(comparison)
                bar.update()
                bar.note(f"${sum(c.replay.cost_usd or 0 for c in report.turns):.4f}")
    finally:
        if own_model is not None:
            await own_model.close()


async def _restore(
    event: SessionRestored,
    store: ScratchStore,
    history: SessionHistory,
    after: dict[uuid.UUID, SessionState],
) -> None:
    """A save loaded in the recorded session: the scratch story goes back to the save's turn
    as the replay told it (as recorded, for a turn before the replay's first)."""
    current = store.states[history.session_id]
    if event.turn_id is not None and event.turn_id in after:
        target = after[event.turn_id]
    else:
        try:
            target = history.after(event.turn_id)
        except KeyError:
            raise HistoryGap(
                f"session.restored goes back to turn {event.turn_id}, never narrated"
            ) from None
    await store.save(rewind(current, target))


def _compare(view: TurnView, published: list[Envelope]) -> Comparison:
    assert view.request is not None
    original = Version.of(view.outcome, [view.fold] if view.fold is not None else [])
    outcome = next(
        (e for e in reversed(published) if isinstance(e, NarrationCompleted | TurnFailed)), None
    )
    folds = [e for e in published if isinstance(e, MemoryFolded)]
    return Comparison(view.number, view.request, original, Version.of(outcome, folds))
