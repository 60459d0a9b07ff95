"""Server-Sent Events on the wire: frames, heartbeats, the end, and who is connected.

`SSE_CLIENTS` is the one place that knows how many SSE clients are connected to this
process: metrics hook in there (`SSE_CLIENTS.listeners`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi.responses import StreamingResponse

from taleforge.api.streaming.feed import Emitted, TurnFeed

log = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"
# Tells EventSource to wait this long (ms) before it reconnects after a dropped connection.
RETRY_MS = 1000


@dataclass
class ConnectedClients:
    """SSE clients connected now; each listener is called with the new count."""

    count: int = 0
    listeners: list[Callable[[int], None]] = field(default_factory=list)

    def changed(self, by: int) -> None:
        self.count += by
        for listener in self.listeners:
            try:
                listener(self.count)
            except Exception:
                log.exception("SSE client listener failed")


SSE_CLIENTS = ConnectedClients()


def wants_event_stream(accept: str | None) -> bool:
    return bool(accept) and SSE_MEDIA_TYPE in (accept or "").lower()


def frame(emitted: Emitted) -> bytes:
    # `data` is one line of JSON (json never contains a raw newline), so one `data:` field.
    return (
        f"id: {emitted.id}\nevent: {emitted.event.event}\ndata: {emitted.event.json()}\n\n"
    ).encode(errors="replace")  # a lone surrogate from a model must not break the stream


async def _frames(feed: TurnFeed, heartbeat_s: float) -> AsyncIterator[bytes]:
    SSE_CLIENTS.changed(+1)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        async for batch in feed.batches(idle_s=heartbeat_s):
            # A comment line keeps proxies from closing an idle connection and shows a
            # vanished client to us (the write fails). Events already waiting go out in one
            # write: under load each write (and the ASGI layers around it) is the cost.
            yield b": keep-alive\n\n" if batch is None else b"".join(map(frame, batch))
    except Exception:
        # Headers are sent: no problem body now. End the stream; the client resumes from
        # its last event id (on this replica or another).
        log.exception("the event stream of turn %s broke", feed.state.turn_id)
        yield b": error; reconnect with Last-Event-ID\n\n"
    finally:
        SSE_CLIENTS.changed(-1)


def event_stream(feed: TurnFeed, *, heartbeat_s: float, turn_url: str) -> StreamingResponse:
    """The turn's events as an SSE response; it ends after `turn.completed`/`turn.failed`."""
    return StreamingResponse(
        _frames(feed, heartbeat_s),
        media_type=SSE_MEDIA_TYPE,
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            "Content-Location": turn_url,
        },
    )
