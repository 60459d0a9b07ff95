"""The one exception a projection raises for an event that can never be applied."""

from __future__ import annotations


class EventRejected(Exception):
    """The event cannot be applied, ever: it goes to the dead letters. `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
