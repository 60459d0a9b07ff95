"""A request that kept failing leaves a dead letter an operator can list (and retry).

`turn.failed` / `image.failed` with a "kept failing" code (max_deliveries, or the narrator's
provider_unavailable after its retries) is recorded in `dead_letters` at the stream
sequence of the request; other failures are not. The `delivery.exhausted` persistence
translates from the server's MAX_DELIVERIES advisory (which the owning service answers with
that failure) adds no row of its own. Once per event, and a rebuild makes the same rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats
import pytest

from taleforge.contracts import (
    DeliveryExhausted,
    Envelope,
    ImageFailed,
    ImageRequested,
    NarrationCompleted,
    TokenUsage,
    TurnFailed,
    publish_headers,
)
from taleforge.persistence.adapters.advisories import exhausted_event
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.rebuild import rebuild

from ...support import asyncpg_dsn
from .conftest import Story

pytestmark = pytest.mark.integration


async def dead_letters(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT stream_seq, subject, reason, delivery_count, payload"
            " FROM dead_letters ORDER BY stream_seq"
        )
        return [dict(row) for row in rows]
    finally:
        await conn.close()


async def test_failures_that_kept_failing_are_dead_letters_and_rebuild_makes_the_same(
    nats_url: str,
    migrated_database_url: str,
    repo: Repository,
    story: Story,
    new_database: Callable[[], Awaitable[str]],
) -> None:
    lost, refused, pictured = story.turn("lost"), story.turn("refused"), story.turn("pictured")
    image_id = uuid.uuid5(pictured.turn_id, "image:scene")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    seqs: dict[uuid.UUID, int] = {}

    async def publish(event: Envelope) -> int:
        ack = await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))
        seqs[event.event_id] = ack.seq
        return int(ack.seq)

    log: list[Envelope] = [story.started()]
    for event in log:
        await publish(event)
    lost_seq = await publish(lost)
    await publish(refused)
    await publish(pictured)
    usage = TokenUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    request = ImageRequested(**story.ids(pictured.turn_id), image_id=image_id, prompt="a bell")

    def exhausted(consumer: str, original: Envelope, seq: int, n: int) -> DeliveryExhausted:
        advisory = {"stream": "STORY", "consumer": consumer, "stream_seq": seq, "deliveries": n}
        event = exhausted_event(json.dumps(advisory).encode(), original.to_bytes(), seq)
        assert event is not None
        return event

    failures: list[Envelope] = [
        exhausted("narrator", lost, lost_seq, 5),
        TurnFailed(
            **story.ids(lost.turn_id),
            code="max_deliveries",
            reason="The storyteller could not finish this turn after 5 attempts.",
            request_seq=lost_seq,
        ),
        TurnFailed(**story.ids(refused.turn_id), code="provider_auth", reason="Key refused."),
        NarrationCompleted(**story.ids(pictured.turn_id), text="Bong.", model="m", usage=usage),
    ]
    for event in failures:
        await publish(event)
    image_seq = await publish(request)
    await publish(image_exhausted := exhausted("illustrator", request, image_seq, 3))
    assert image_exhausted.image_id == image_id
    image_failed = ImageFailed(
        **story.ids(pictured.turn_id),
        image_id=image_id,
        code="max_deliveries",
        reason="gave up after 3 deliveries without a result",
        request_seq=image_seq,
    )
    await publish(image_failed)
    events = [*log, lost, refused, pictured, *failures, request, image_exhausted, image_failed]
    try:
        for event in [*events, *events]:  # the second pass is a redelivery: no change
            await repo.apply_event(event, seqs[event.event_id])
        live = await dead_letters(migrated_database_url)
        assert [(r["stream_seq"], r["subject"]) for r in live] == [
            (lost_seq, f"story.events.{story.session_id}.turn.requested"),
            (image_seq, f"story.events.{story.session_id}.image.requested"),
        ]
        assert live[0]["reason"].startswith("turn.failed max_deliveries: The storyteller")
        assert live[1]["reason"].startswith("image.failed max_deliveries: gave up")

        rebuilt_url = await new_database()
        report = await rebuild(rebuilt_url, nats_url, batch_size=4, progress=False)
        assert report.dead_letters == 2
        assert await dead_letters(rebuilt_url) == live
    finally:
        await nc.close()
