"""The trace context in message headers, part of the wire contract, and the spans around it.

Every stream publish carries, beside `Nats-Msg-Id`, the W3C `traceparent` of the span that
published it and W3C `baggage` naming the event's session and turn. A consumer continues
the trace from those headers (its CONSUMER span is a child of the publisher's span) and its
log lines name the turn without parsing the body. W3C Trace Context is also what
FastStream's NatsTelemetryMiddleware writes and reads, so publishers and consumers of
either kind interoperate.

OpenTelemetry API only: until a process sets up the SDK, every span here is a no-op. The
ids read from baggage stay out of the OpenTelemetry context, so instrumented HTTP clients do
not forward them to third parties (OpenAI, ComfyUI).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry import baggage, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, format_span_id, format_trace_id

from taleforge.contracts.subjects import EVENTS_PREFIX, MSG_ID_HEADER, publish_headers

if TYPE_CHECKING:
    from taleforge.contracts.envelope import Envelope

# Span attributes and baggage keys. `taleforge trace TURN_ID` finds a turn's trace by TURN_ID.
SESSION_ID = "taleforge.session_id"
TURN_ID = "taleforge.turn_id"
EVENT_TYPE = "taleforge.event_type"
DELIVERY = "taleforge.delivery"
_IDS = (SESSION_ID, TURN_ID)

_tracer = trace.get_tracer(__name__)
_redelivered = metrics.get_meter(__name__).create_counter(
    "taleforge.messages.redelivered",
    unit="{message}",
    description="Messages handled again after an earlier delivery was not acknowledged.",
)
# The session and turn of the message being handled, for log lines (see log_fields).
_current_ids: ContextVar[Mapping[str, str] | None] = ContextVar("taleforge_ids", default=None)


def event_ids(event: Envelope) -> dict[str, str]:
    ids = {SESSION_ID: str(event.session_id), EVENT_TYPE: event.type}
    if event.turn_id is not None:
        ids[TURN_ID] = str(event.turn_id)
    return ids


def message_headers(event: Envelope) -> dict[str, str]:
    """`publish_headers(event)` plus the current trace context and the event's ids as baggage."""
    headers = publish_headers(event)
    ctx: Context | None = None  # None: the current context (its span is the parent)
    for key, value in event_ids(event).items():
        if key in _IDS:
            ctx = baggage.set_baggage(key, value, context=ctx)
    propagate.inject(headers, context=ctx)
    return headers


@contextlib.contextmanager
def publishing(event: Envelope) -> Iterator[dict[str, str]]:
    """A PRODUCER span around one stream publish; yields the headers to publish with."""
    with _tracer.start_as_current_span(
        f"publish {event.type}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": event.subject(),
            "messaging.message.id": str(event.event_id),
            **event_ids(event),
        },
    ):
        yield message_headers(event)


def event_type_of(subject: str) -> str:
    """story.events.<session>.<type…> → <type…> (the subject itself when it is not an event)."""
    parts = subject.removeprefix(f"{EVENTS_PREFIX}.").split(".", 1)
    return parts[1] if subject.startswith(f"{EVENTS_PREFIX}.") and len(parts) == 2 else subject


def _received(
    subject: str, headers: Mapping[str, str] | None, consumer: str, delivery: int
) -> tuple[Context, dict[str, str | int]]:
    """The publisher's span context (baggage left out) and the span attributes of a message."""
    extracted = propagate.extract(dict(headers or {}))
    parent = trace.set_span_in_context(trace.get_current_span(extracted), Context())
    attributes: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": subject,
        "messaging.consumer.group.name": consumer,
        EVENT_TYPE: event_type_of(subject),
        DELIVERY: delivery,
    }
    if headers and MSG_ID_HEADER in headers:
        attributes["messaging.message.id"] = headers[MSG_ID_HEADER]
    for key in _IDS:
        value = baggage.get_baggage(key, extracted)
        if isinstance(value, str):
            attributes[key] = value
    if delivery > 1:
        _redelivered.add(1, {"messaging.consumer.group.name": consumer})
    return parent, attributes


@contextlib.contextmanager
def consuming(
    subject: str, headers: Mapping[str, str] | None, *, consumer: str, delivery: int = 1
) -> Iterator[Span]:
    """A CONSUMER span around handling one message, a child of the span that published it.

    `consumer` is the durable consumer; `delivery` JetStream's delivery count (from 1).
    """
    parent, attributes = _received(subject, headers, consumer, delivery)
    ids = {key: str(attributes[key]) for key in _IDS if key in attributes}
    token = _current_ids.set(ids)
    try:
        with _tracer.start_as_current_span(
            f"process {attributes[EVENT_TYPE]}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span
    finally:
        _current_ids.reset(token)


@contextlib.contextmanager
def consuming_batch(
    messages: Sequence[tuple[str, Mapping[str, str] | None, int]], *, consumer: str
) -> Iterator[None]:
    """Spans around handling several messages at once (subject, headers, delivery each).

    One message: as `consuming`. Several: each gets its CONSUMER span in its own trace, and
    the work done for all of them (one transaction) runs under a batch span linked to those.
    """
    if not messages:
        yield
        return
    if len(messages) == 1:
        subject, headers, delivery = messages[0]
        with consuming(subject, headers, consumer=consumer, delivery=delivery):
            yield
        return
    spans = []
    for subject, headers, delivery in messages:
        parent, attributes = _received(subject, headers, consumer, delivery)
        spans.append(
            _tracer.start_span(
                f"process {attributes[EVENT_TYPE]}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )
        )
    try:
        with _tracer.start_as_current_span(
            "process batch",
            context=Context(),
            kind=SpanKind.CONSUMER,
            links=[Link(span.get_span_context()) for span in spans],
            attributes={
                "messaging.system": "nats",
                "messaging.consumer.group.name": consumer,
                "messaging.batch.message_count": len(messages),
            },
        ):
            yield
    finally:
        for span in spans:
            span.end()


def log_fields() -> dict[str, str]:
    """What a log line written now should carry: trace and span ids, session and turn ids."""
    ids = _current_ids.get() or {}
    fields = {key.removeprefix("taleforge."): value for key, value in ids.items()}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format_trace_id(span_context.trace_id)
        fields["span_id"] = format_span_id(span_context.span_id)
    return fields
