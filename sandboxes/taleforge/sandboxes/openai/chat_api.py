"""POST /v1/chat/completions: plain JSON, or chunks ending with `data: [DONE]`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from taleforge.sandboxes.openai.config import FaultConfig
from taleforge.sandboxes.openai.generation import (
    MALFORMED_LINE,
    Generation,
    error_payload,
    generate,
    injected,
    paced,
)
from taleforge.sandboxes.openai.prompt import all_text, last_user_text
from taleforge.sandboxes.openai.state import SandboxState
from taleforge.sandboxes.openai.wire import chat_chunk, chat_completion, new_id, sse

router = APIRouter()

_SYSTEM_ROLES = ("system", "developer")


async def _chunks(
    body: dict[str, Any],
    gen: Generation,
    fault: FaultConfig,
    delay_ms: float,
    first_delay_ms: float,
    entry: dict[str, Any],
) -> AsyncIterator[bytes]:
    completion_id, created = new_id("chatcmpl"), int(time.time())
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any] | None, **extra: Any) -> bytes:
        data = chat_chunk(
            body,
            completion_id=completion_id,
            created=created,
            delta=delta,
            with_usage_field=include_usage,
            **extra,
        )
        return sse(None, data)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    index = 0
    async for token in paced(gen.tokens, fault, delay_ms, first_delay_ms):
        broken = injected(fault, index)
        if broken == "error":
            yield sse(None, error_payload(fault, index))
            return
        if broken == "malformed":
            yield MALFORMED_LINE
            return
        if index == 0:
            entry["first_delta_at"] = time.time()
        index += 1
        yield chunk({"content": token})
    call = gen.tool_call
    if call is not None:
        function = {"name": call.name, "arguments": call.arguments}
        tool_delta = {"index": 0, "id": call.call_id, "type": "function", "function": function}
        yield chunk({"tool_calls": [tool_delta]})
    yield chunk({}, finish_reason="stop" if call is None else "tool_calls")
    if include_usage:
        yield chunk(None, usage=gen.usage)
    yield sse(None, "[DONE]")


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    body = await request.json()
    entry = state.record("POST", "/v1/chat/completions", body)
    messages = body.get("messages") or []
    failure = state.call_fault(request.headers.get("authorization"), last_user_text(messages))
    if failure is not None:
        return failure
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
    others = [m for m in messages if m not in system]
    gen = generate(
        state,
        "\n".join(all_text(system)),
        others,
        cache_key=body.get("prompt_cache_key"),
        tools=body.get("tools"),
    )
    if body.get("stream"):
        cfg = state.config
        fault = state.stream_fault()
        chunks = _chunks(body, gen, fault, cfg.token_delay_ms, cfg.first_token_delay_ms, entry)
        return StreamingResponse(chunks, media_type="text/event-stream")
    completion = chat_completion(
        body, completion_id=new_id("chatcmpl"), text=gen.text, usage=gen.usage
    )
    return JSONResponse(completion)
