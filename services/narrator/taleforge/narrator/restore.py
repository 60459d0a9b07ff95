"""Loading a save: rewind a session's story state to the save's turn.

`session.restored` reaches the narrator in stream order with the session's turns, so every
turn requested before it is settled by then. The state is rebuilt from the session's events
up to and including the restore, with the same `SessionHistory` that `taleforge
show-prompt` uses: the state as it stood right after the save's turn (its summary
included), so the next prompt has no trace of the undone turns and a rebuilt prompt matches
what was sent. What the narrator has settled stays settled, so a redelivered turn of the
undone branch is not narrated again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from taleforge.contracts import Envelope, SessionRestored
from taleforge.narrator.history import HistoryGap, session_history
from taleforge.narrator.narration import Delivery, SessionStore
from taleforge.narrator.story import SEEN_TURN_IDS, SessionState

log = logging.getLogger(__name__)


class SessionEvents(Protocol):
    async def read(self, session_id: uuid.UUID, *, through_seq: int | None) -> list[Envelope]:
        """The session's events, in stream order, up to `through_seq` (None: all)."""
        ...


def truncated(state: SessionState, event: SessionRestored) -> SessionState:
    """A best effort when the log no longer has the session's start: drop the recent turns
    after the save's turn (or all of them, for the opening)."""
    numbers = {record.turn_id: record.number for record in state.turns}
    if event.turn_id is not None and event.turn_id not in numbers:
        log.error(
            "session %s: turn %s is in neither the log nor the recent turns; not rewound",
            event.session_id,
            event.turn_id,
        )
        return state
    last = 0 if event.turn_id is None else numbers[event.turn_id]
    return state.model_copy(update={"turns": [t for t in state.turns if t.number <= last]})


def merge_settled(rewound: SessionState, current: SessionState | None, seq: int) -> SessionState:
    previous = current.settled_turn_ids if current is not None else []
    ids = [*rewound.settled_turn_ids]
    ids += [turn_id for turn_id in previous if turn_id not in set(ids)]
    last = max(seq, current.last_turn_seq if current is not None else 0)
    return rewound.model_copy(
        update={"settled_turn_ids": ids[-SEEN_TURN_IDS:], "last_turn_seq": last}
    )


class Restorer:
    def __init__(self, store: SessionStore, events: SessionEvents) -> None:
        self._store = store
        self._events = events

    async def restore(self, event: SessionRestored, delivery: Delivery) -> None:
        seq = delivery.stream_seq
        current = await self._store.load(event.session_id)
        if current is not None and seq is not None and current.last_turn_seq >= seq:
            log.info("session %s: restore at seq %s already applied", event.session_id, seq)
            await delivery.ack()
            return
        events = await self._events.read(event.session_id, through_seq=seq)
        try:
            history = session_history(event.session_id, events)
            if history.started is None:
                raise HistoryGap("its session.started is no longer in the log")
            rewound = history.state
        except HistoryGap as exc:
            log.warning("session %s: cannot replay its log (%s)", event.session_id, exc)
            rewound = truncated(current or SessionState(session_id=event.session_id), event)
        state = merge_settled(rewound, current, seq or 0)
        await self._store.save(state)
        log.info(
            "session %s restored to turn %s (save %s): %d recent turns, summary through %d",
            event.session_id,
            event.turn_id,
            event.save_id,
            len(state.turns),
            state.summarized_through,
        )
        await delivery.ack()
