"""A session's story state: the scenario, the rolling summary and the recent turns.

Kept per session in a NATS KV bucket, so it survives restarts and replays. Turns are
numbered from 1 in stream order; `summarized_through` says which turns the summary covers,
so no turn is ever summarised twice.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from taleforge.contracts import InputType, SessionStarted
from taleforge.contracts.events import ScenarioSnapshot

# How many narrated turn ids to remember beyond the recent turns, to spot duplicates.
SEEN_TURN_IDS = 256


class TurnRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    turn_id: uuid.UUID
    input_type: InputType
    text: str
    narration: str


class SessionState(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: uuid.UUID
    title: str = ""
    opening: str = ""
    scenario: ScenarioSnapshot = Field(default_factory=ScenarioSnapshot)
    summary: str = ""
    summarized_through: int = Field(default=0, description="Turns 1..N are in the summary.")
    turns: list[TurnRecord] = Field(default_factory=list, description="Recent turns, in order.")
    turn_count: int = 0
    last_turn_seq: int = Field(default=0, description="Stream sequence of the last settled turn.")
    settled_turn_ids: list[uuid.UUID] = Field(default_factory=list)
    last_scene_image_turn: int = 0

    @classmethod
    def started(cls, event: SessionStarted) -> SessionState:
        return cls(
            session_id=event.session_id,
            title=event.title,
            opening=event.opening,
            scenario=event.scenario or ScenarioSnapshot(),
        )

    def is_settled(self, turn_id: uuid.UUID, stream_seq: int | None) -> bool:
        """Was this turn already narrated (or failed for good)? Then it must not run again."""
        if turn_id in self.settled_turn_ids:
            return True
        return stream_seq is not None and 0 < stream_seq <= self.last_turn_seq

    def _settled(self, turn_id: uuid.UUID, stream_seq: int | None) -> dict[str, object]:
        ids = [*self.settled_turn_ids, turn_id][-SEEN_TURN_IDS:]
        return {
            "settled_turn_ids": ids,
            "last_turn_seq": max(self.last_turn_seq, stream_seq or 0),
        }

    def with_turn(
        self,
        turn_id: uuid.UUID,
        input_type: InputType,
        text: str,
        narration: str,
        stream_seq: int | None,
    ) -> SessionState:
        number = self.turn_count + 1
        record = TurnRecord(
            number=number, turn_id=turn_id, input_type=input_type, text=text, narration=narration
        )
        return self.model_copy(
            update={
                "turns": [*self.turns, record],
                "turn_count": number,
                **self._settled(turn_id, stream_seq),
            }
        )

    def with_failed_turn(self, turn_id: uuid.UUID, stream_seq: int | None) -> SessionState:
        return self.model_copy(update=self._settled(turn_id, stream_seq))

    def with_summary(self, summary: str, folded: int) -> SessionState:
        """The oldest `folded` recent turns now live in `summary`."""
        covered = self.turns[:folded]
        return self.model_copy(
            update={
                "summary": summary,
                "summarized_through": covered[-1].number if covered else self.summarized_through,
                "turns": self.turns[folded:],
                # The opening is the first thing a summary takes in.
                "opening": "" if covered else self.opening,
            }
        )
