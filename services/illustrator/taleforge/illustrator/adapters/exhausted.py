"""`delivery.exhausted` in: an image request JetStream gave up delivering to us is failed.

Persistence translates the server's MAX_DELIVERIES advisories into `delivery.exhausted`
stream events; they reach us on our own consumer. One about our consumer and an image
request: fetch the original request by its sequence and fail it (`Illustrator.fail`: an
ImageFailed max_deliveries unless the image already has an outcome). Anything else (another
service's consumer) is ignored; the caller acknowledges it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    DeliveryExhausted,
    ImageRequested,
    InvalidEvent,
    parse_event,
)
from taleforge.illustrator.adapters.bus import CONSUMER_NAME
from taleforge.illustrator.rendering import Illustrator

log = logging.getLogger(__name__)

OnExhausted = Callable[[DeliveryExhausted], Awaitable[None]]


def exhausted_requests(js: JetStreamContext, illustrator: Illustrator) -> OnExhausted:
    async def on_exhausted(event: DeliveryExhausted) -> None:
        if event.consumer != CONSUMER_NAME or event.request_type != ImageRequested.TYPE:
            return
        try:
            original = await js.get_msg(STREAM_NAME, event.request_seq)
        except NotFoundError:
            log.error("image request %d ran out of deliveries and is gone", event.request_seq)
            return
        try:
            request = parse_event(original.data or b"")
        except InvalidEvent:
            return  # malformed requests are terminated, never failed for a player
        if isinstance(request, ImageRequested):
            reason = f"gave up after {event.deliveries} deliveries without a result"
            await illustrator.fail(request, "max_deliveries", reason, event.request_seq)

    return on_exhausted
