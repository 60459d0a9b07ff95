"""One model call's output, and how it is paced and broken when streamed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from taleforge.sandboxes.openai.config import FaultConfig
from taleforge.sandboxes.openai.prompt import all_text, last_user_text
from taleforge.sandboxes.openai.state import SandboxState
from taleforge.sandboxes.openai.storyteller import (
    count_words,
    deterministic_reply,
    illustration_arguments,
    stream_tokens,
    wants_picture,
)
from taleforge.sandboxes.openai.wire import Usage, new_id


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
class ToolCall:
    call_id: str
    name: str
    arguments: str  # JSON, as the API sends it


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: list[str]
    usage: Usage
    tool_call: ToolCall | None = None


def _function_names(tools: Any) -> list[str]:
    """Names of the function tools offered, in either API's shape."""
    names = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            nested = tool.get("function")
            function: dict[str, Any] = nested if isinstance(nested, dict) else tool
            if isinstance(function.get("name"), str):
                names.append(function["name"])
    return names


def generate(
    state: SandboxState,
    instructions: str,
    items: Any,
    *,
    cache_key: str | None = None,
    tools: Any = None,
) -> Generation:
    prompt_text = last_user_text(items)
    text = deterministic_reply(prompt_text)
    tokens = stream_tokens(text)
    instruction_words = count_words(instructions)
    if cache_key:
        words = instructions.split() + " ".join(all_text(items)).split()
        cached = state.cached_prefix(cache_key, words)
    else:
        cached = state.cached_tokens(instructions, instruction_words)
    tool_call = None
    names = _function_names(tools)
    mode = state.faults.illustrate
    if names and (mode == "always" or (mode == "auto" and wants_picture(prompt_text))):
        arguments = illustration_arguments(instructions, prompt_text, text)
        tool_call = ToolCall(new_id("call"), names[0], json.dumps(arguments))
    usage = Usage(
        input_tokens=instruction_words + count_words(*all_text(items)),
        cached_tokens=cached,
        output_tokens=len(tokens) + (0 if tool_call is None else len(tool_call.arguments.split())),
    )
    return Generation(text=text, tokens=tokens, usage=usage, tool_call=tool_call)


def injected(fault: FaultConfig, index: int) -> str | None:
    """The break a stream injects before delta `index`: "error", "malformed" or None."""
    if index == fault.error_event_after_deltas:
        return "error"
    if index == fault.malformed_after_deltas:
        return "malformed"
    return None


def error_payload(fault: FaultConfig, sequence: int) -> dict[str, Any]:
    """A mid-stream error event, in the nested or the flat shape seen in the wild."""
    code = fault.error_event_code
    message = f"The server had an error while streaming ({code}, sandbox)."
    if fault.error_event_shape == "flat":
        return {
            "type": "error",
            "code": code,
            "message": message,
            "param": None,
            "sequence_number": sequence,
        }
    error = {"type": code, "code": code, "message": message, "param": None}
    return {"type": "error", "error": error, "sequence_number": sequence}


MALFORMED_LINE = b"data: {this is not json\n\n"


async def paced(
    tokens: list[str], fault: FaultConfig, delay_ms: float, first_delay_ms: float = 0.0
) -> AsyncIterator[str]:
    """Yield tokens with the configured delay, stalling or dropping where the fault says.

    `first_delay_ms` comes once, before the first token: a model's time to first token.
    """
    if first_delay_ms:
        await asyncio.sleep(first_delay_ms / 1000)
    for index, token in enumerate(tokens):
        if index == fault.drop_after_deltas:
            raise SimulatedDrop(f"sandbox dropped the connection after {index} deltas")
        if index == fault.stall_after_deltas:
            if fault.stall_s is None:
                # Until the client gives up: Starlette cancels us when it disconnects.
                await asyncio.Event().wait()
            await asyncio.sleep(fault.stall_s or 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        yield token
