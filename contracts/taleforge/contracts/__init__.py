"""Taleforge event contracts: every event, subject name and header the services agree on.

Pure data: nothing in this package does I/O.
"""

from taleforge.contracts.envelope import Envelope
from taleforge.contracts.events import (
    ALL_EVENTS,
    LIVE_EVENTS,
    STREAM_EVENTS,
    ImageCompleted,
    ImageFailed,
    ImageKind,
    ImageRequested,
    InputType,
    LiveEvent,
    NarrationCompleted,
    NarrationDelta,
    NarrationStarted,
    SessionStarted,
    StoryEvent,
    TokenUsage,
    TurnFailed,
    TurnRequested,
)
from taleforge.contracts.parsing import InvalidEvent, parse_event, parse_live_event
from taleforge.contracts.subjects import (
    EVENTS_PREFIX,
    IMAGE_BUCKET,
    LIVE_PREFIX,
    MSG_ID_HEADER,
    STREAM_NAME,
    STREAM_SUBJECTS,
    event_subject,
    events_filter,
    live_filter,
    live_subject,
    publish_headers,
)

__all__ = [
    "ALL_EVENTS",
    "EVENTS_PREFIX",
    "IMAGE_BUCKET",
    "LIVE_EVENTS",
    "LIVE_PREFIX",
    "MSG_ID_HEADER",
    "STREAM_EVENTS",
    "STREAM_NAME",
    "STREAM_SUBJECTS",
    "Envelope",
    "ImageCompleted",
    "ImageFailed",
    "ImageKind",
    "ImageRequested",
    "InputType",
    "InvalidEvent",
    "LiveEvent",
    "NarrationCompleted",
    "NarrationDelta",
    "NarrationStarted",
    "SessionStarted",
    "StoryEvent",
    "TokenUsage",
    "TurnFailed",
    "TurnRequested",
    "event_subject",
    "events_filter",
    "live_filter",
    "live_subject",
    "parse_event",
    "parse_live_event",
    "publish_headers",
]
