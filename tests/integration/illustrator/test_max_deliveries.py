"""Each image request ends in exactly one outcome, whatever killed its deliveries.

- A request whose deliveries all die (fetched, never acked) while no illustrator runs is
  failed with `max_deliveries` by the next illustrator (advisory kept in ADVISORIES,
  turned into a `delivery.exhausted` event by persistence).
- A request that already has an outcome on the stream (ImageCompleted published just
  before a crash) gets no ImageFailed, neither from the advisory nor from a failing retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    event_subject,
    parse_event,
    publish_headers,
)
from taleforge.contracts.subjects import ADVISORY_STREAM_NAME
from taleforge.illustrator.adapters.bus import CONSUMER_NAME, ensure_consumer

from ...support import translate_advisories, wait_until_idle

pytestmark = pytest.mark.integration


async def events_on(js: JetStreamContext, subject: str) -> list[Any]:
    found, seq = [], 1
    while True:
        try:
            msg = await js.get_msg(STREAM_NAME, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(parse_event(msg.data or b""))
        seq = int(msg.seq or 0) + 1


def outcomes(js: JetStreamContext, request: ImageRequested) -> Any:
    async def both() -> list[Any]:
        events = []
        for event_type in (ImageCompleted.TYPE, ImageFailed.TYPE):
            events += await events_on(js, event_subject(request.session_id, event_type))
        return [e for e in events if e.image_id == request.image_id]

    return both()


def completed(request: ImageRequested) -> ImageCompleted:
    return ImageCompleted(
        event_id=uuid.uuid5(request.image_id, "image.completed"),
        session_id=request.session_id,
        user_id=request.user_id,
        turn_id=request.turn_id,
        image_id=request.image_id,
        bucket="taleforge-images",
        object_name=f"{request.image_id}.png",
        size_bytes=3,
        sha256=hashlib.sha256(b"png").hexdigest(),
        width=request.width,
        height=request.height,
    )


async def publish(js: JetStreamContext, event: Any) -> int:
    return int(
        (await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))).seq
    )


async def test_requests_out_of_deliveries_fail_once_unless_they_have_an_outcome(
    harness: Any,
) -> None:
    js = harness.js
    await ensure_consumer(js, ack_wait_s=1, max_deliver=2, max_ack_pending=10)
    lost, done = harness.request(), harness.request()
    lost_seq = await publish(js, lost)
    await publish(js, done)
    await publish(js, completed(done))  # published, then the process died before its ack
    sub = await js.pull_subscribe_bind(durable=CONSUMER_NAME, stream=STREAM_NAME)
    for _ in range(2):  # every delivery dies
        taken = 0
        async with asyncio.timeout(30):
            while taken < 2:
                taken += len(await sub.fetch(2 - taken, timeout=10))
    async with asyncio.timeout(30):
        while (await js.stream_info(ADVISORY_STREAM_NAME)).state.messages < 2:
            try:
                assert not await sub.fetch(1, timeout=1)
            except NatsTimeoutError:
                pass
    await sub.unsubscribe()
    await translate_advisories(js, 2)  # persistence: two delivery.exhausted on STORY
    last = (await js.stream_info(STREAM_NAME)).state.last_seq

    settings = harness.settings("http://127.0.0.1:9", ack_wait_s=1, max_deliver=2)
    async with harness.running(settings):
        await wait_until_idle(js, STREAM_NAME, CONSUMER_NAME, last)

    [failed] = await outcomes(js, lost)
    assert isinstance(failed, ImageFailed) and failed.code == "max_deliveries"
    assert failed.request_seq == lost_seq
    assert failed.event_id == uuid.uuid5(lost.image_id, "image.failed")
    [only] = await outcomes(js, done)
    assert isinstance(only, ImageCompleted)


async def test_a_failing_retry_after_a_completed_image_publishes_no_failure(
    harness: Any,
) -> None:
    request = harness.request()
    # ImageCompleted landed, the ack did not; the retry then cannot reach ComfyUI at all.
    await publish(harness.js, completed(request))
    settings = harness.settings("http://127.0.0.1:9", max_deliver=1)
    async with harness.running(settings):
        seq = await publish(harness.js, request)
        await wait_until_idle(harness.js, STREAM_NAME, CONSUMER_NAME, seq)
    [only] = await outcomes(harness.js, request)
    assert isinstance(only, ImageCompleted)
