"""A session's story state at each of its turns, rebuilt from the event log.

The narrator's state changes only on events that are in the log: `SessionStarted` (the
scenario and opening), `MemoryFolded` (a fold, with the summary it produced),
`NarrationCompleted` (the turn joins the history), `TurnFailed` (settled, no narration) and
`SessionRestored` (the story goes back to a save). Applying them in stream order, with the
same `SessionState` methods the narrator uses, gives the state each prompt was built with;
`build_prompt` then gives the prompt, and the sha256 the narrator recorded with the narration
(`PromptRecord`) proves it byte-for-byte. `taleforge show-prompt` and `taleforge replay` use
this; a replay can start from any turn's `before` state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from taleforge.contracts import (
    MemoryFolded,
    NarrationCompleted,
    NarrationStarted,
    SessionRestored,
    SessionStarted,
    TurnFailed,
    TurnRequested,
)
from taleforge.contracts.envelope import Envelope
from taleforge.narrator.prompting import PROMPT_VERSION, Prompt, build_prompt
from taleforge.narrator.recording import prompt_sha256
from taleforge.narrator.story import SessionState


class HistoryGap(Exception):
    """The log lacks an event the rebuild needs (aged out, or never written)."""


@dataclass
class TurnView:
    """One turn request of the session and what the narrator made of it."""

    number: int  # the session's Nth turn request (0: its request is not in the log)
    turn_id: uuid.UUID
    request: TurnRequested | None = None
    before: SessionState | None = None  # when the narrator took the turn, before any fold
    prompt_state: SessionState | None = None  # what its (last) prompt was built with
    fold: MemoryFolded | None = None
    outcome: NarrationCompleted | TurnFailed | None = None

    @property
    def completed(self) -> NarrationCompleted | None:
        return self.outcome if isinstance(self.outcome, NarrationCompleted) else None


class Check(StrEnum):
    VERIFIED = "verified"  # equal to the recorded sha256
    MISMATCH = "mismatch"  # rebuilt, but not what was sent
    OTHER_FORMAT = "other_format"  # recorded by a narrator with another prompt format
    UNRECORDED = "unrecorded"  # nothing to check against (failed, pending, or older narrator)


@dataclass(frozen=True)
class RebuiltPrompt:
    view: TurnView
    prompt: Prompt
    check: Check
    recorded_sha256: str | None
    sha256: str
    state: SessionState  # what the prompt was rebuilt from

    def differences(self) -> str:
        """Where the rebuilt inputs differ from what the narrator recorded."""
        record = self.view.completed.prompt if self.view.completed is not None else None
        if record is None:
            return ""
        first = self.state.turns[0].turn_id if self.state.turns else None
        rebuilt = (
            self.state.summarized_through if self.state.summary else 0,
            len(self.state.turns),
        )
        found = []
        if rebuilt[0] != record.summarized_through:
            found.append(f"summary through turn {rebuilt[0]}, recorded {record.summarized_through}")
        if (rebuilt[1], first) != (record.turns, record.first_turn_id):
            found.append(
                f"{rebuilt[1]} recent turns from {first}, recorded {record.turns} from "
                f"{record.first_turn_id}"
            )
        if bool(self.state.opening) != record.opening:
            found.append(f"opening {'in' if self.state.opening else 'not in'} the rebuild only")
        return "; ".join(found) or "same summary and recent turns: the text itself differs"

    def explain(self) -> str:
        if self.check is Check.VERIFIED:
            return f"sha256 {self.sha256} matches the narrator's record"
        if self.check is Check.MISMATCH:
            return (
                f"NOT the prompt that was sent: rebuilt sha256 {self.sha256}, recorded "
                f"{self.recorded_sha256} ({self.differences()}; the state was changed outside "
                "the log, or a fold was redone after a crash)"
            )
        if self.check is Check.OTHER_FORMAT:
            recorded = self.view.completed and self.view.completed.prompt
            return (
                f"recorded with prompt format {recorded.format if recorded else '?'}; this "
                f"code builds {PROMPT_VERSION}: the text below is today's format, not byte-exact"
            )
        return "not verified: the narrator recorded no prompt for this turn"


class SessionHistory:
    """Feed it one session's events in stream order (`apply`); ask about any turn."""

    def __init__(self, session_id: uuid.UUID) -> None:
        self.session_id = session_id
        self.started: SessionStarted | None = None
        self.state = SessionState(session_id=session_id)
        self._initial = self.state
        self._turns: dict[uuid.UUID, TurnView] = {}
        self._after: dict[uuid.UUID, SessionState] = {}  # state right after each narrated turn

    @property
    def turns(self) -> list[TurnView]:
        """Turn requests in order (turns whose request aged out are left out)."""
        return sorted((t for t in self._turns.values() if t.number), key=lambda t: t.number)

    def apply(self, event: Envelope) -> None:
        if isinstance(event, SessionStarted):
            # As the narrator: the first start makes the state, a repeated one changes nothing.
            if self.started is None:
                self.started = event
                self.state = self._initial = SessionState.started(event)
        elif isinstance(event, TurnRequested):
            view = self._view(event.turn_id)
            if view.request is None:
                view.request = event
                view.number = 1 + sum(1 for t in self._turns.values() if t.number)
        elif isinstance(event, NarrationStarted):
            self._take(event.turn_id)
        elif isinstance(event, MemoryFolded):
            view = self._take(event.turn_id)
            view.fold = event
            self.state = self.state.with_summary(event.summary, event.folded_turns)
        elif isinstance(event, NarrationCompleted):
            view = self._take(event.turn_id)
            view.prompt_state, view.outcome = self.state, event
            if view.request is None:
                raise HistoryGap(f"turn {event.turn_id} was narrated but its request is missing")
            request = view.request
            self.state = self.state.with_turn(
                event.turn_id, request.input_type, request.text, event.text, None
            )
            self._after[event.turn_id] = self.state
        elif isinstance(event, TurnFailed):
            view = self._take(event.turn_id)
            if view.prompt_state is None:
                view.prompt_state = self.state
            view.outcome = event
            self.state = self.state.with_failed_turn(event.turn_id, None)
        elif isinstance(event, SessionRestored):
            self.state = self._restored(event)

    def _restored(self, event: SessionRestored) -> SessionState:
        if event.turn_id is not None and event.turn_id not in self._after:
            raise HistoryGap(f"session.restored goes back to turn {event.turn_id}, not in the log")
        return rewind(self.state, self.after(event.turn_id))

    @property
    def initial(self) -> SessionState:
        """The state at the session's start (its opening)."""
        return self._initial

    def after(self, turn_id: uuid.UUID | None) -> SessionState:
        """The state right after the turn was narrated (None: at the start)."""
        return self._initial if turn_id is None else self._after[turn_id]

    def _view(self, turn_id: uuid.UUID) -> TurnView:
        view = self._turns.get(turn_id)
        if view is None:
            view = self._turns[turn_id] = TurnView(number=0, turn_id=turn_id)
        return view

    def _take(self, turn_id: uuid.UUID) -> TurnView:
        """The narrator's first event for the turn: the state it took the turn with."""
        view = self._view(turn_id)
        if view.before is None:
            view.before = self.state
        return view

    def view(self, turn_id: uuid.UUID) -> TurnView:
        view = self._turns.get(turn_id)
        if view is None or view.request is None:
            raise HistoryGap(f"turn {turn_id} has no turn.requested in session {self.session_id}")
        return view

    def prompt(self, turn_id: uuid.UUID) -> RebuiltPrompt:
        """The turn's prompt as the narrator built it (a turn not taken yet: as it would be)."""
        view = self.view(turn_id)
        assert view.request is not None
        state = view.prompt_state or view.before or self.state
        prompt = build_prompt(view.request, state)
        sha = prompt_sha256(prompt)
        record = view.completed.prompt if view.completed is not None else None
        if record is None:
            check = Check.UNRECORDED
        elif record.format != PROMPT_VERSION:
            check = Check.OTHER_FORMAT
        else:
            check = Check.VERIFIED if record.sha256 == sha else Check.MISMATCH
        return RebuiltPrompt(view, prompt, check, record.sha256 if record else None, sha, state)


def rewind(current: SessionState, target: SessionState) -> SessionState:
    """`current` sent back to `target` (a save's turn): the story as it stood then.

    Turns settled since stay settled (a redelivered turn of the undone branch is not
    narrated again) and numbering goes on, so summaries never reuse a turn number.
    """
    return target.model_copy(
        update={
            "turn_count": max(target.turn_count, current.turn_count),
            "settled_turn_ids": current.settled_turn_ids,
            "last_turn_seq": current.last_turn_seq,
        }
    )


def session_history(session_id: uuid.UUID, events: Iterable[Envelope]) -> SessionHistory:
    history = SessionHistory(session_id)
    for event in events:
        history.apply(event)
    return history
