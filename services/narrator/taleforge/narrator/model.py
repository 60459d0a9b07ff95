"""The narrator's view of a language model: a streamed reply, or an error that says what to do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from taleforge.contracts import TokenUsage
from taleforge.narrator.prompting import Prompt

OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModelReply:
    text: str
    model: str
    usage: TokenUsage
    response_id: str | None


class ModelError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class PermanentModelError(ModelError):
    """Trying again will not help (bad key, unknown model, quota gone): fail the turn."""


class TransientModelError(ModelError):
    """Worth another delivery later (rate limit, 5xx, timeout, stall, dropped stream)."""

    def __init__(self, code: str, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(code, reason)
        self.retry_after_s = retry_after_s


class NarrationModel(Protocol):
    async def narrate(
        self, prompt: Prompt, *, on_delta: OnDelta, metadata: dict[str, str]
    ) -> ModelReply:
        """Stream a reply, awaiting `on_delta` for each piece of text, in order."""
        ...
