"""POST /v1/responses: the Responses API, plain JSON or a server-sent event stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from taleforge.sandboxes.openai.generation import Generation, generate, paced
from taleforge.sandboxes.openai.state import SandboxState, StreamFault
from taleforge.sandboxes.openai.wire import (
    new_id,
    output_message,
    output_text_part,
    response_object,
    sse,
)

router = APIRouter()


async def _events(
    body: dict[str, Any], gen: Generation, fault: StreamFault, delay_ms: float
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
    async for token in paced(gen.tokens, fault, delay_ms):
        yield event("response.output_text.delta", delta=token, logprobs=[], **where)
    yield event("response.output_text.done", text=gen.text, logprobs=[], **where)
    yield event("response.content_part.done", part=output_text_part(gen.text), **where)
    done_item = output_message(item_id, gen.text, "completed")
    yield event("response.output_item.done", output_index=0, item=done_item)
    yield event("response.completed", response=snapshot("completed", [done_item]))


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    body = await request.json()
    state.record("POST", "/v1/responses", body)
    failure = state.call_fault(request.headers.get("authorization"))
    if failure is not None:
        return failure
    gen = generate(state, body.get("instructions") or "", body.get("input", ""))
    if body.get("stream"):
        fault = state.stream_fault()
        events = _events(body, gen, fault, state.config.token_delay_ms)
        return StreamingResponse(events, media_type="text/event-stream")
    item = output_message(new_id("msg"), gen.text, "completed")
    return JSONResponse(
        response_object(
            body,
            response_id=new_id("resp"),
            created_at=int(time.time()),
            status="completed",
            output=[item],
            usage=gen.usage,
        )
    )
