"""The narration model behind any OpenAI-compatible Responses API, streamed.

The SDK retries only before a response starts; a stream that stalls, drops or ends without
`response.completed` is caught here and reported as a transient error, so no partial
narration is ever taken for a whole one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import openai
from openai import AsyncOpenAI
from openai.types.responses import ResponseInputParam

from taleforge.contracts import TokenUsage
from taleforge.narrator.model import (
    ModelReply,
    OnDelta,
    PermanentModelError,
    TransientModelError,
)
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings

log = logging.getLogger(__name__)

_PERMANENT_STATUS = {
    400: "provider_rejected",
    401: "provider_auth",
    403: "provider_forbidden",
    404: "provider_model_not_found",
    422: "provider_rejected",
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


def _usage(raw: Any) -> TokenUsage:
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

    async def narrate(
        self, prompt: Prompt, *, on_delta: OnDelta, metadata: dict[str, str]
    ) -> ModelReply:
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                return await self._stream(prompt, on_delta, metadata)
        except openai.APIStatusError as exc:
            raise classify(exc) from exc
        except openai.APITimeoutError as exc:
            raise TransientModelError("provider_timeout", "the model provider timed out") from exc
        except openai.APIConnectionError as exc:
            raise TransientModelError(
                "provider_unreachable", f"lost the connection to the model provider: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise TransientModelError(
                "provider_timeout",
                f"no complete reply within {self._settings.request_timeout_s:g} s",
            ) from exc

    async def _stream(
        self, prompt: Prompt, on_delta: OnDelta, metadata: dict[str, str]
    ) -> ModelReply:
        settings = self._settings
        stream = await self._client.responses.create(
            model=settings.model,
            instructions=prompt.instructions,
            input=cast(ResponseInputParam, prompt.messages),
            temperature=settings.temperature,
            max_output_tokens=settings.max_output_tokens,
            prompt_cache_key=prompt.cache_key,
            metadata=metadata,
            stream=True,
        )
        events = stream.__aiter__()
        pieces: list[str] = []
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.__anext__(), settings.stall_timeout_s)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise TransientModelError(
                        "provider_stalled",
                        f"the reply stalled for {settings.stall_timeout_s:g} s mid-stream",
                    ) from exc
                if event.type == "response.output_text.delta":
                    pieces.append(event.delta)
                    await on_delta(event.delta)
                elif event.type == "response.completed":
                    response = event.response
                    return ModelReply(
                        text=response.output_text or "".join(pieces),
                        model=response.model or settings.model,
                        usage=_usage(response.usage),
                        response_id=response.id,
                    )
                elif event.type == "response.incomplete":
                    reason = getattr(event.response.incomplete_details, "reason", None)
                    raise PermanentModelError(
                        "narration_incomplete", f"the model stopped early ({reason or 'unknown'})"
                    )
                elif event.type in ("response.failed", "error"):
                    raise TransientModelError(
                        "provider_unavailable", f"the model provider reported {event.type}"
                    )
        finally:
            await stream.close()
        raise TransientModelError(
            "provider_unreachable", "the reply stream ended before completion"
        )
