"""The one place subject names, stream names and message headers are built.

Subjects put the session before the type, so either can be filtered:
`story.events.<session_id>.<type>` (type itself is dotted, e.g. `turn.requested`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from taleforge.contracts.envelope import Envelope

STREAM_NAME = "STORY"
EVENTS_PREFIX = "story.events"
STREAM_SUBJECTS = (f"{EVENTS_PREFIX}.>",)
# The session token of admin events (scenarios, settings, dead letters): not a session id.
ADMIN_TOKEN = "admin"
LIVE_PREFIX = "story.live"
# Captures the live channel's core-NATS publishes for a short while (memory storage), so any
# API replica can replay a turn's deltas to a client that reconnects.
LIVE_STREAM_NAME = "LIVE"
LIVE_STREAM_SUBJECTS = (f"{LIVE_PREFIX}.>",)
IMAGE_BUCKET = "taleforge-images"
MSG_ID_HEADER = "Nats-Msg-Id"
# Captures JetStream's MAX_DELIVERIES advisories for STORY's consumers (core-NATS advisories
# are lost when nobody listens); persistence turns each into a `delivery.exhausted` event.
ADVISORY_STREAM_NAME = "ADVISORIES"
MAX_DELIVERIES_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


def max_deliveries_subject(consumer: str = "*", stream: str = STREAM_NAME) -> str:
    """Subject of the server's advisory: `consumer` gave up delivering a `stream` message."""
    return f"{MAX_DELIVERIES_PREFIX}.{stream}.{consumer}"


_FORBIDDEN = frozenset(" \t\r\n.*>")


def _token(value: UUID | str, what: str) -> str:
    text = str(value)
    if not text or any(ch in _FORBIDDEN for ch in text):
        raise ValueError(f"{what} {text!r} cannot be used in a NATS subject")
    return text


def event_subject(session_id: UUID | str, event_type: str) -> str:
    """Subject of one stream event, e.g. story.events.<sid>.turn.requested."""
    parts = event_type.split(".")
    for part in parts:
        _token(part, "event type part")
    return f"{EVENTS_PREFIX}.{_token(session_id, 'session id')}.{event_type}"


def events_filter(session_id: UUID | str | None = None, event_type: str | None = None) -> str:
    """A subject filter over the stream: one session, one type, both, or everything."""
    session = "*" if session_id is None else _token(session_id, "session id")
    if event_type is None:
        return f"{EVENTS_PREFIX}.{session}.>"
    return f"{EVENTS_PREFIX}.{session}.{event_type}"


def admin_subject(event_type: str) -> str:
    """Subject of an admin event, e.g. story.events.admin.scenario.upserted."""
    return event_subject(ADMIN_TOKEN, event_type)


def admin_filter() -> str:
    return f"{EVENTS_PREFIX}.{ADMIN_TOKEN}.>"


def live_subject(session_id: UUID | str, turn_id: UUID | str) -> str:
    """Core-NATS subject for one turn's live deltas and progress."""
    return f"{LIVE_PREFIX}.{_token(session_id, 'session id')}.{_token(turn_id, 'turn id')}"


def live_filter(session_id: UUID | str | None = None) -> str:
    session = "*" if session_id is None else _token(session_id, "session id")
    return f"{LIVE_PREFIX}.{session}.*"


def publish_headers(event: Envelope) -> dict[str, str]:
    """Headers every stream publish carries; the msg id makes JetStream drop duplicates."""
    return {MSG_ID_HEADER: str(event.event_id)}
