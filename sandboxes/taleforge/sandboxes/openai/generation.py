"""One model call's output, and how it is paced and broken when streamed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from taleforge.sandboxes.openai.prompt import all_text, last_user_text
from taleforge.sandboxes.openai.state import SandboxState, StreamFault
from taleforge.sandboxes.openai.storyteller import count_words, deterministic_reply, stream_tokens
from taleforge.sandboxes.openai.wire import Usage


class SimulatedDrop(Exception):
    """Raised inside a streaming body so the server closes the connection mid-response."""


class _HideSimulatedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BaseExceptionGroup):
            return not exc.subgroup(SimulatedDrop)
        return not isinstance(exc, SimulatedDrop)


_drop_filter = _HideSimulatedDrops()


def hide_simulated_drops_in_logs() -> None:
    """A dropped connection is the point of the fault: keep its traceback out of the log."""
    logging.getLogger("uvicorn.error").addFilter(_drop_filter)


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: list[str]
    usage: Usage


def generate(state: SandboxState, instructions: str, items: Any) -> Generation:
    text = deterministic_reply(last_user_text(items))
    tokens = stream_tokens(text)
    instruction_words = count_words(instructions)
    usage = Usage(
        input_tokens=instruction_words + count_words(*all_text(items)),
        cached_tokens=state.cached_tokens(instructions, instruction_words),
        output_tokens=len(tokens),
    )
    return Generation(text=text, tokens=tokens, usage=usage)


async def paced(tokens: list[str], fault: StreamFault, delay_ms: float) -> AsyncIterator[str]:
    """Yield tokens with the configured delay, stalling or dropping where the fault says."""
    for index, token in enumerate(tokens):
        if fault.drop_after is not None and index == fault.drop_after:
            raise SimulatedDrop(f"sandbox dropped the connection after {index} deltas")
        if fault.stall_after is not None and index == fault.stall_after:
            if fault.stall_s is None:
                # Until the client gives up: Starlette cancels us when it disconnects.
                await asyncio.Event().wait()
            await asyncio.sleep(fault.stall_s or 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        yield token
