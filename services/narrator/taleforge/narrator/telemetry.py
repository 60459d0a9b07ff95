"""The narrator's telemetry: SDK set-up, a GenAI span per model call, turn metrics.

The SDK is configured by the standard OTEL_* variables (exporters, endpoint, resource,
sampler; nothing is exported while they are unset). The OpenAI calls get a CLIENT span
with the GenAI semantic conventions' attributes, filled here by hand:
opentelemetry-instrumentation-openai-v2 wraps only Chat Completions, not the Responses API
we speak by default. The SDK's HTTP requests (httpx2) appear as its children. No prompt or
reply text is recorded, only models, token counts, finish reasons and errors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

from nats.aio.msg import Msg
from opentelemetry import metrics, trace
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.trace import Span, SpanKind

from taleforge.contracts import TurnRequested, tracing
from taleforge.contracts.log_format import configure_logging
from taleforge.narrator.model import ModelCall, ModelError, ModelReply, NarrationModel, OnDelta
from taleforge.narrator.pricing import cost_usd
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings

SERVICE_NAME = "narrator"
SECONDS = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120]

_tracer = trace.get_tracer(__name__)
_meter = metrics.get_meter(__name__)
_tokens = _meter.create_counter(
    "taleforge.narrator.tokens",
    unit="{token}",
    description="Tokens the model read (input) and wrote (output), by model and purpose.",
)
_cost = _meter.create_counter(
    "taleforge.narrator.cost", unit="USD", description="What the model calls cost, by model."
)
_first_token = _meter.create_histogram(
    "taleforge.narration.time_to_first_token",
    unit="s",
    description="From a narration call's start to its first streamed text.",
    explicit_bucket_boundaries_advisory=SECONDS,
)
_turn_duration = _meter.create_histogram(
    "taleforge.turn.duration",
    unit="s",
    description="From a turn's request entering the stream to the narrator settling it.",
    explicit_bucket_boundaries_advisory=SECONDS,
)


def setup(settings: Settings) -> None:
    """Process set-up (from __main__): log lines, the SDK from OTEL_*, httpx2 spans."""
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    OpenTelemetryConfigurator().configure()  # type: ignore[no-untyped-call]
    HTTPX2ClientInstrumentor().instrument()  # the OpenAI SDK speaks HTTP with httpx2


@contextlib.contextmanager
def consuming(msg: Msg, consumer: str) -> Iterator[None]:
    """The CONSUMER span of one message; for a turn, how long it took since it was asked."""
    meta = msg.metadata
    with tracing.consuming(
        msg.subject, msg.headers, consumer=consumer, delivery=meta.num_delivered or 1
    ):
        yield
    if tracing.event_type_of(msg.subject) == TurnRequested.TYPE:
        _turn_duration.record((datetime.now(UTC) - meta.timestamp).total_seconds())


class TracedModel:
    """A NarrationModel reporting each call: GenAI span, tokens, cost, time to first token."""

    def __init__(self, model: NarrationModel, settings: Settings) -> None:
        self._model = model
        self._settings = settings
        url = urlsplit(settings.openai_base_url)
        self._server: dict[str, str | int] = {
            "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }

    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        started = time.monotonic()
        first = True

        async def observed(text: str) -> None:
            nonlocal first
            if first:
                first = False
                _first_token.record(time.monotonic() - started, _metric_attributes(call))
            await on_delta(text)

        with self._span(call) as span:
            reply = await self._model.narrate(prompt, call, on_delta=observed)
            self._record(span, call, reply)
        return reply

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        with self._span(call) as span:
            reply = await self._model.summarize(instructions, text, call)
            self._record(span, call, reply)
        return reply

    @contextlib.contextmanager
    def _span(self, call: ModelCall) -> Iterator[Span]:
        attributes: dict[str, str | int | float] = {
            "gen_ai.system": "openai",
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": call.model,
            "gen_ai.request.max_tokens": call.max_output_tokens,
            "taleforge.openai.api": self._settings.api,
            "taleforge.purpose": _purpose(call),
            **self._server,
        }
        if call.temperature is not None:
            attributes["gen_ai.request.temperature"] = call.temperature
        with _tracer.start_as_current_span(
            f"chat {call.model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                yield span
            except Exception as exc:
                code = exc.code if isinstance(exc, ModelError) else type(exc).__qualname__
                span.set_attribute("error.type", code)
                raise

    def _record(self, span: Span, call: ModelCall, reply: ModelReply) -> None:
        usage = reply.usage
        # A completed reply stopped on its own, or on the illustration tool call.
        finish = "tool_calls" if reply.illustration else "stop"
        span.set_attributes(
            {
                "gen_ai.response.model": reply.model,
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                "gen_ai.response.finish_reasons": (finish,),
            }
        )
        if reply.response_id:
            span.set_attribute("gen_ai.response.id", reply.response_id)
        attributes = _metric_attributes(call)
        _tokens.add(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
        _tokens.add(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        prices = self._settings.prices
        cost = cost_usd(prices, reply.model, usage) or cost_usd(prices, call.model, usage)
        if cost is not None:
            _cost.add(cost, attributes)


def _purpose(call: ModelCall) -> str:
    return call.metadata.get("purpose", "narration")


def _metric_attributes(call: ModelCall) -> dict[str, str]:
    return {"gen_ai.request.model": call.model, "taleforge.purpose": _purpose(call)}
