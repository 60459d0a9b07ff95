"""Does an image already have an outcome on the STORY stream?

Asked before publishing an `image.failed`: a render whose `image.completed` was published
just before the process died (no ack) is redelivered, and a retry that then fails for good
must not give the image a second outcome. The deterministic Nats-Msg-Ids dedupe only within
the stream's duplicate window, so the stream itself is the guard.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    InvalidEvent,
    event_subject,
    parse_event,
)

# the request → the type of the image's outcome on the stream, or None
OutcomeLookup = Callable[[ImageRequested], Awaitable[str | None]]


def image_outcomes(js: JetStreamContext) -> OutcomeLookup:
    async def outcome(request: ImageRequested) -> str | None:
        for event_type in (ImageCompleted.TYPE, ImageFailed.TYPE):
            subject = event_subject(request.session_id, event_type)
            seq = 1  # the whole session: a republished request comes after its outcome
            while True:  # one request per image outcome of this session
                try:
                    msg = await js.get_msg(STREAM_NAME, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                try:
                    event = parse_event(msg.data or b"")
                except InvalidEvent:
                    event = None
                if isinstance(event, ImageCompleted | ImageFailed) and (
                    event.image_id == request.image_id
                ):
                    return event.type
                seq = int(msg.seq or seq) + 1
        return None

    return outcome
