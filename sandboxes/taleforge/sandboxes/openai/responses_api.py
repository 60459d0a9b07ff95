"""POST /v1/responses: the Responses API, plain JSON or a server-sent event stream."""

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
    ToolCall,
    error_payload,
    generate,
    injected,
    paced,
)
from taleforge.sandboxes.openai.prompt import last_user_text
from taleforge.sandboxes.openai.state import SandboxState
from taleforge.sandboxes.openai.wire import (
    new_id,
    output_message,
    output_text_part,
    response_object,
    sse,
)

router = APIRouter()


def function_call_item(call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + call.call_id.removeprefix("call_"),
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments if arguments is None else arguments,
        "status": status,
    }


async def _events(
    body: dict[str, Any],
    gen: Generation,
    fault: FaultConfig,
    delay_ms: float,
    first_delay_ms: float,
    entry: dict[str, Any],
) -> AsyncIterator[bytes]:
    response_id, item_id = new_id("resp"), new_id("msg")
    created = int(time.time())
    sequence = 0

    def event(event_type: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": event_type, "sequence_number": sequence, **fields}
        sequence += 1
        return sse(event_type, data)

    def snapshot(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        usage = gen.usage if status == "completed" else None
        return response_object(
            body,
            response_id=response_id,
            created_at=created,
            status=status,
            output=output,
            usage=usage,
        )

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=snapshot("in_progress", []))
    yield event("response.in_progress", response=snapshot("in_progress", []))
    yield event(
        "response.output_item.added",
        output_index=0,
        item=output_message(item_id, None, "in_progress"),
    )
    yield event("response.content_part.added", part=output_text_part(""), **where)
    index = 0
    async for token in paced(gen.tokens, fault, delay_ms, first_delay_ms):
        broken = injected(fault, index)
        if broken == "error":
            yield sse("error", error_payload(fault, sequence))
            return
        if broken == "malformed":
            yield MALFORMED_LINE
            return
        if index == 0:
            entry["first_delta_at"] = time.time()
        index += 1
        yield event("response.output_text.delta", delta=token, logprobs=[], **where)
    yield event("response.output_text.done", text=gen.text, logprobs=[], **where)
    yield event("response.content_part.done", part=output_text_part(gen.text), **where)
    done_item = output_message(item_id, gen.text, "completed")
    yield event("response.output_item.done", output_index=0, item=done_item)
    output = [done_item]
    call = gen.tool_call
    if call is not None:
        added = function_call_item(call, "in_progress", arguments="")
        fc_id = added["id"]
        yield event("response.output_item.added", output_index=1, item=added)
        yield event(
            "response.function_call_arguments.delta",
            item_id=fc_id,
            output_index=1,
            delta=call.arguments,
        )
        yield event(
            "response.function_call_arguments.done",
            item_id=fc_id,
            output_index=1,
            name=call.name,
            arguments=call.arguments,
        )
        done_call = function_call_item(call, "completed")
        yield event("response.output_item.done", output_index=1, item=done_call)
        output.append(done_call)
    yield event("response.completed", response=snapshot("completed", output))


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    body = await request.json()
    entry = state.record("POST", "/v1/responses", body)
    failure = state.call_fault(
        request.headers.get("authorization"), last_user_text(body.get("input", ""))
    )
    if failure is not None:
        return failure
    gen = generate(
        state,
        body.get("instructions") or "",
        body.get("input", ""),
        cache_key=body.get("prompt_cache_key"),
        tools=body.get("tools"),
    )
    if body.get("stream"):
        fault = state.stream_fault()
        cfg = state.config
        events = _events(body, gen, fault, cfg.token_delay_ms, cfg.first_token_delay_ms, entry)
        return StreamingResponse(events, media_type="text/event-stream")
    output = [output_message(new_id("msg"), gen.text, "completed")]
    if gen.tool_call is not None:
        output.append(function_call_item(gen.tool_call, "completed"))
    return JSONResponse(
        response_object(
            body,
            response_id=new_id("resp"),
            created_at=int(time.time()),
            status="completed",
            output=output,
            usage=gen.usage,
        )
    )
