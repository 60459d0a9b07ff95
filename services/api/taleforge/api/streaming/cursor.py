"""The SSE event id: where a turn's stream stands, so any replica can resume it exactly.

`<start>-<story>-<live>-<attempt>[-end]`:
- `start`: STORY sequence of the turn's `TurnRequested` (where its events begin);
- `story`: the last STORY sequence handled (0: none yet);
- `live`: the last LIVE sequence handled (0: none yet);
- `attempt`: the highest narrator attempt whose deltas were sent (0: none);
- `-end`: the stream's last event (turn completed or failed) was sent.

Every STORY and LIVE message up to those sequences has been dealt with (sent or skipped)
and nothing after them has, so resuming after them sends no gaps and no repeats. Sequences
are the streams' own, the same on every replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_PATTERN = re.compile(r"^(\d{1,19})-(\d{1,19})-(\d{1,19})-(\d{1,9})(-end)?$")


class InvalidCursor(ValueError):
    """A Last-Event-ID this service did not write."""


@dataclass(frozen=True, slots=True)
class Cursor:
    start: int
    story: int = 0
    live: int = 0
    attempt: int = 0
    ended: bool = False

    @classmethod
    def beginning(cls, start: int) -> Cursor:
        return cls(start=start)

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _PATTERN.match(text.strip())
        if match is None:
            raise InvalidCursor(f"not an event id of this API: {text[:100]!r}")
        start, story, live, attempt = (int(match.group(i)) for i in range(1, 5))
        if start < 1:
            raise InvalidCursor("an event id starts at a stream sequence of 1 or more")
        return cls(start, story, live, attempt, ended=match.group(5) is not None)

    def __str__(self) -> str:
        text = f"{self.start}-{self.story}-{self.live}-{self.attempt}"
        return text + "-end" if self.ended else text

    def at_story(self, seq: int) -> Cursor:
        return replace(self, story=max(self.story, seq))

    def at_live(self, seq: int, attempt: int | None = None) -> Cursor:
        return replace(self, live=max(self.live, seq), attempt=max(self.attempt, attempt or 0))

    def ending(self) -> Cursor:
        return replace(self, ended=True)
