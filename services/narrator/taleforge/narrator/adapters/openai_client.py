"""The narration model behind any OpenAI-compatible API, streamed.

Two wire formats, chosen by `NARRATOR_API`: the Responses API (default) and Chat
Completions with `stream_options.include_usage` (for servers without /v1/responses).

The SDK retries only before a response starts; everything that can go wrong mid-stream —
a stall, a dropped connection, a malformed `data:` line, an `error` event (nested
`{"type":"error","error":{...}}`, which the SDK raises as `APIError`, or flat
`{"type":"error","code":...}`, which it yields) — is caught here and classified, so no
partial narration is ever taken for a whole one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
from openai import AsyncOpenAI

from taleforge.contracts import ImageKind, TokenUsage
from taleforge.narrator.model import (
    Illustration,
    ModelCall,
    ModelReply,
    OnDelta,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings

log = logging.getLogger(__name__)

ILLUSTRATION_TOOL = "request_illustration"
_ILLUSTRATION_DESCRIPTION = (
    "Ask for a picture of this beat, only when the scene changes or a new character "
    "appears. Describe what is seen, not what is felt."
)
_ILLUSTRATION_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "description": "A short visual description of the scene."},
        "characters": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Names of the characters in the picture.",
        },
        "kind": {"type": "string", "enum": ["scene", "portrait"]},
    },
    "required": ["prompt", "characters", "kind"],
    "additionalProperties": False,
}

_PERMANENT_STATUS = {
    400: "provider_rejected",
    401: "provider_auth",
    403: "provider_forbidden",
    404: "provider_model_not_found",
    422: "provider_rejected",
}
_PERMANENT_CODES = {
    "insufficient_quota": "provider_quota",
    "invalid_api_key": "provider_auth",
    "model_not_found": "provider_model_not_found",
    "context_length_exceeded": "provider_rejected",
}


def retry_after_s(headers: Any) -> float | None:
    """The server's requested wait, from retry-after-ms or retry-after (seconds)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            continue
    return None


def _responses_usage(raw: Any) -> TokenUsage:
    if raw is None:
        return TokenUsage()
    input_details = getattr(raw, "input_tokens_details", None)
    output_details = getattr(raw, "output_tokens_details", None)
    return TokenUsage(
        input_tokens=raw.input_tokens or 0,
        cached_tokens=getattr(input_details, "cached_tokens", 0) or 0,
        output_tokens=raw.output_tokens or 0,
        reasoning_tokens=getattr(output_details, "reasoning_tokens", 0) or 0,
        total_tokens=raw.total_tokens or 0,
    )


def _chat_usage(raw: Any) -> TokenUsage:
    if raw is None:
        return TokenUsage()
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    return TokenUsage(
        input_tokens=raw.prompt_tokens or 0,
        cached_tokens=getattr(prompt_details, "cached_tokens", 0) or 0,
        output_tokens=raw.completion_tokens or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", 0) or 0,
        total_tokens=raw.total_tokens or 0,
    )


def classify_code(code: str | None, message: str) -> PermanentModelError | TransientModelError:
    """A provider error code (from an error body or event) as permanent or transient."""
    if code in _PERMANENT_CODES:
        return PermanentModelError(
            _PERMANENT_CODES[code], f"the model provider refused the request ({code}: {message})"
        )
    return TransientModelError(
        "provider_unavailable", f"the model provider reported {code or 'an error'}: {message}"
    )


def classify(exc: openai.APIStatusError) -> PermanentModelError | TransientModelError:
    status = exc.status_code
    message = getattr(exc, "message", str(exc))
    if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
        return PermanentModelError(
            "provider_quota", f"the model provider's quota is used up ({message})"
        )
    if status in _PERMANENT_STATUS:
        return PermanentModelError(
            _PERMANENT_STATUS[status],
            f"the model provider refused the request ({status}: {message})",
        )
    return TransientModelError(
        "provider_unavailable",
        f"the model provider answered {status}: {message}",
        retry_after_s=retry_after_s(exc.response.headers),
    )


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict):
        return body.get("code") or body.get("type")
    return None


def parse_illustration(arguments: str) -> Illustration | None:
    """The tool call's arguments, or None when they are unusable (the turn goes on)."""
    try:
        data = json.loads(arguments or "{}")
        prompt = str(data.get("prompt") or "").strip()
        characters = [str(c) for c in data.get("characters") or [] if str(c).strip()]
        kind = ImageKind(data.get("kind") or ImageKind.SCENE)
    except (ValueError, TypeError, AttributeError):
        log.warning("ignoring malformed %s arguments: %.200s", ILLUSTRATION_TOOL, arguments)
        return None
    if not prompt:
        return None
    return Illustration(prompt=prompt[:1000], characters=characters[:20], kind=kind)


async def _next_within(events: AsyncIterator[Any], stall_s: float) -> Any:
    """The next stream event; StopAsyncIteration at the end; a transient error on a stall."""
    try:
        return await asyncio.wait_for(events.__anext__(), stall_s)
    except TimeoutError as exc:
        raise TransientModelError(
            "provider_stalled", f"the reply stalled for {stall_s:g} s mid-stream"
        ) from exc


class OpenAINarrationModel:
    def __init__(self, settings: Settings, client: AsyncOpenAI | None = None) -> None:
        self._settings = settings
        self._client = client or AsyncOpenAI(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            # The SDK default is 600 s; a turn must fail over long before that.
            timeout=openai.Timeout(settings.request_timeout_s, connect=5.0),
            max_retries=settings.openai_max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        stream = self._chat_stream if self._settings.api == "chat" else self._responses_stream
        return await self._guarded(stream(prompt, call, on_delta))

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        return await self._guarded(self._summary(instructions, text, call))

    async def _guarded(self, work: Any) -> ModelReply:
        """Run one call under the overall timeout, turning SDK errors into ours."""
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                reply: ModelReply = await work
                return reply
        except openai.APIStatusError as exc:
            raise classify(exc) from exc
        except openai.APITimeoutError as exc:
            raise TransientModelError("provider_timeout", "the model provider timed out") from exc
        except openai.APIConnectionError as exc:
            raise TransientModelError(
                "provider_unreachable", f"lost the connection to the model provider: {exc}"
            ) from exc
        except openai.APIError as exc:  # a nested `error` event mid-stream
            raise classify_code(_error_code(exc.body), exc.message) from exc
        except json.JSONDecodeError as exc:
            raise TransientModelError(
                "provider_malformed", "the model provider sent a malformed stream line"
            ) from exc
        except TimeoutError as exc:
            raise TransientModelError(
                "provider_timeout",
                f"no complete reply within {self._settings.request_timeout_s:g} s",
            ) from exc

    async def _responses_stream(
        self, prompt: Prompt, call: ModelCall, on_delta: OnDelta
    ) -> ModelReply:
        tools: Any = openai.omit
        if call.offer_illustration:
            tools = [
                {
                    "type": "function",
                    "name": ILLUSTRATION_TOOL,
                    "description": _ILLUSTRATION_DESCRIPTION,
                    "parameters": _ILLUSTRATION_PARAMETERS,
                    "strict": True,
                }
            ]
        stream = await self._client.responses.create(
            model=call.model,
            instructions=prompt.instructions,
            input=cast(Any, prompt.messages),
            temperature=openai.omit if call.temperature is None else call.temperature,
            max_output_tokens=call.max_output_tokens,
            prompt_cache_key=prompt.cache_key,
            metadata=call.metadata,
            tools=tools,
            stream=True,
        )
        events = stream.__aiter__()
        pieces: list[str] = []
        try:
            while True:
                try:
                    event = await _next_within(events, self._settings.stall_timeout_s)
                except StopAsyncIteration:
                    break
                if event.type == "response.output_text.delta":
                    pieces.append(event.delta)
                    await on_delta(event.delta)
                elif event.type == "response.completed":
                    return self._responses_reply(event.response, pieces, call)
                elif event.type == "response.incomplete":
                    reason = getattr(event.response.incomplete_details, "reason", None)
                    raise PermanentModelError(
                        "narration_incomplete", f"the model stopped early ({reason or 'unknown'})"
                    )
                elif event.type == "response.failed":
                    error = event.response.error
                    raise classify_code(
                        getattr(error, "code", None), getattr(error, "message", "response failed")
                    )
                elif event.type == "error":  # the flat shape
                    raise classify_code(event.code, event.message)
        finally:
            await stream.close()
        raise TransientModelError(
            "provider_unreachable", "the reply stream ended before completion"
        )

    def _responses_reply(self, response: Any, pieces: list[str], call: ModelCall) -> ModelReply:
        illustration = None
        for item in response.output or []:
            if getattr(item, "type", None) == "function_call" and item.name == ILLUSTRATION_TOOL:
                illustration = parse_illustration(item.arguments)
        return ModelReply(
            text=response.output_text or "".join(pieces),
            model=response.model or call.model,
            usage=_responses_usage(response.usage),
            response_id=response.id,
            illustration=illustration,
        )

    async def _chat_stream(self, prompt: Prompt, call: ModelCall, on_delta: OnDelta) -> ModelReply:
        tools: Any = openai.omit
        if call.offer_illustration:
            function = {
                "name": ILLUSTRATION_TOOL,
                "description": _ILLUSTRATION_DESCRIPTION,
                "parameters": _ILLUSTRATION_PARAMETERS,
            }
            tools = [{"type": "function", "function": function}]
        messages = [{"role": "system", "content": prompt.instructions}, *prompt.messages]
        stream = await self._client.chat.completions.create(
            model=call.model,
            messages=cast(Any, messages),
            temperature=openai.omit if call.temperature is None else call.temperature,
            max_tokens=call.max_output_tokens,
            prompt_cache_key=prompt.cache_key,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        events = stream.__aiter__()
        pieces: list[str] = []
        arguments: list[str] = []
        finished = False
        usage: Any = None
        response_id, model = None, call.model
        try:
            while True:
                try:
                    chunk = await _next_within(events, self._settings.stall_timeout_s)
                except StopAsyncIteration:
                    break
                if getattr(chunk, "type", None) == "error":  # a flat error object
                    extra = chunk.model_extra or {}
                    raise classify_code(extra.get("code"), str(extra.get("message")))
                response_id, model = chunk.id or response_id, chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        pieces.append(delta.content)
                        await on_delta(delta.content)
                    for tool_call in (delta.tool_calls if delta is not None else None) or []:
                        if tool_call.function is not None and tool_call.function.arguments:
                            arguments.append(tool_call.function.arguments)
                    finished = finished or choice.finish_reason is not None
                    if choice.finish_reason == "length":
                        raise PermanentModelError(
                            "narration_incomplete", "the model stopped early (max tokens)"
                        )
        finally:
            await stream.close()
        if not finished:
            raise TransientModelError(
                "provider_unreachable", "the reply stream ended before completion"
            )
        return ModelReply(
            text="".join(pieces),
            model=model,
            usage=_chat_usage(usage),
            response_id=response_id,
            illustration=parse_illustration("".join(arguments)) if arguments else None,
        )

    async def _summary(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        if self._settings.api == "chat":
            completion = await self._client.chat.completions.create(
                model=call.model,
                messages=[
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": text},
                ],
                max_tokens=call.max_output_tokens,
            )
            return ModelReply(
                text=completion.choices[0].message.content or "",
                model=completion.model or call.model,
                usage=_chat_usage(completion.usage),
                response_id=completion.id,
            )
        response = await self._client.responses.create(
            model=call.model,
            instructions=instructions,
            input=[{"role": "user", "content": text}],
            max_output_tokens=call.max_output_tokens,
            metadata=call.metadata,
        )
        if response.status != "completed":
            raise TransientModelError("summary_incomplete", f"summary ended {response.status}")
        return ModelReply(
            text=response.output_text,
            model=response.model or call.model,
            usage=_responses_usage(response.usage),
            response_id=response.id,
        )
