"""The narrator's rewind on `session.restored`, with fakes for the store and the log."""

from __future__ import annotations

import uuid
from typing import Any

from taleforge.contracts import (
    Envelope,
    InputType,
    NarrationCompleted,
    SessionRestored,
    SessionStarted,
    TurnRequested,
)
from taleforge.narrator.restore import Restorer
from taleforge.narrator.story import SessionState

SESSION, USER = uuid.uuid4(), uuid.uuid4()


class Store:
    def __init__(self, state: SessionState | None) -> None:
        self.state = state
        self.saved: list[SessionState] = []

    async def load(self, session_id: uuid.UUID) -> SessionState | None:
        return self.state

    async def save(self, state: SessionState) -> None:
        self.state = state
        self.saved.append(state)


class Log:
    def __init__(self, events: list[Envelope]) -> None:
        self.events = events

    async def read(self, session_id: uuid.UUID, *, through_seq: int | None) -> list[Envelope]:
        return self.events


class Delivery:
    attempt, delivered_at = 1, 0.0

    def __init__(self, seq: int) -> None:
        self.stream_seq = seq
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nack(self, delay_s: float) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


def played(texts: list[str]) -> tuple[list[Envelope], list[uuid.UUID]]:
    ids: dict[str, Any] = {"session_id": SESSION, "user_id": USER}
    events: list[Envelope] = [
        SessionStarted(**ids, scenario_id="s", title="T", opening="It begins.")
    ]
    turn_ids = []
    for text in texts:
        turn_id = uuid.uuid4()
        turn_ids.append(turn_id)
        events.append(TurnRequested(**ids, turn_id=turn_id, input_type=InputType.ACTION, text=text))
        events.append(NarrationCompleted(**ids, turn_id=turn_id, text=f"then {text}", model="m"))
    return events, turn_ids


def live_state(events: list[Envelope], seq: int) -> SessionState:
    state = SessionState.started(events[0])  # type: ignore[arg-type]
    for request, done in zip(events[1::2], events[2::2], strict=True):
        assert isinstance(request, TurnRequested) and isinstance(done, NarrationCompleted)
        state = state.with_turn(request.turn_id, request.input_type, request.text, done.text, seq)
    return state


async def test_the_state_goes_back_to_the_saves_turn_and_keeps_what_was_settled() -> None:
    events, turn_ids = played(["one", "two", "three"])
    store = Store(live_state(events, seq=7))
    restore = SessionRestored(
        session_id=SESSION, user_id=USER, turn_id=turn_ids[0], save_id=SESSION
    )
    delivery = Delivery(seq=9)

    await Restorer(store, Log([*events, restore])).restore(restore, delivery)

    assert delivery.acked
    assert store.state is not None
    assert [t.text for t in store.state.turns] == ["one"]
    assert set(turn_ids) <= set(store.state.settled_turn_ids)
    assert store.state.last_turn_seq == 9
    # Redelivered after it was applied (and maybe after later turns): nothing changes.
    again = Delivery(seq=9)
    await Restorer(store, Log([])).restore(restore, again)
    assert again.acked and len(store.saved) == 1


async def test_without_the_log_the_recent_turns_are_cut_at_the_save() -> None:
    events, turn_ids = played(["one", "two", "three"])
    store = Store(live_state(events, seq=7))
    restore = SessionRestored(
        session_id=SESSION, user_id=USER, turn_id=turn_ids[1], save_id=SESSION
    )

    await Restorer(store, Log([restore])).restore(restore, Delivery(seq=12))  # aged out

    assert store.state is not None
    assert [t.text for t in store.state.turns] == ["one", "two"]
    assert store.state.opening == "It begins."
