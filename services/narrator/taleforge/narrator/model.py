"""The narrator's view of a language model: a streamed reply, or an error that says what to do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from taleforge.contracts import ImageKind, TokenUsage
from taleforge.narrator.prompting import Prompt

OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModelCall:
    """How to call the model for one request (from the live settings)."""

    model: str
    max_output_tokens: int
    temperature: float | None = None
    offer_illustration: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Illustration:
    """The model asked for a picture of this beat (the request_illustration tool)."""

    prompt: str
    characters: list[str]
    kind: ImageKind


@dataclass(frozen=True)
class ModelReply:
    text: str
    model: str
    usage: TokenUsage
    response_id: str | None
    illustration: Illustration | None = None


class ModelError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class PermanentModelError(ModelError):
    """Trying again will not help (bad key, unknown model, quota gone): fail the turn."""


class TransientModelError(ModelError):
    """Worth another try later (rate limit, 5xx, timeout, stall, dropped or broken stream)."""

    def __init__(self, code: str, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(code, reason)
        self.retry_after_s = retry_after_s


class NarrationModel(Protocol):
    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        """Stream a reply, awaiting `on_delta` for each piece of text, in order."""
        ...

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        """One short reply, not streamed (the rolling summary)."""
        ...
