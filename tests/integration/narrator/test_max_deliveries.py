"""A turn whose message runs out of deliveries still ends in exactly one outcome.

The narrator "dies" on every delivery (the test fetches the message and never acks it), so
JetStream gives up (MAX_DELIVERIES) while no narrator runs; persistence's ADVISORIES stream
keeps the advisory, persistence turns it into a `delivery.exhausted` event, and the narrator
started afterwards fails the turn for the player.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from taleforge.contracts import (
    STREAM_NAME,
    ImageRequested,
    InputType,
    NarrationCompleted,
    TurnFailed,
    TurnRequested,
    event_subject,
    parse_event,
    publish_headers,
)
from taleforge.contracts.events import IllustrationProposal, ImageKind
from taleforge.contracts.subjects import ADVISORY_STREAM_NAME
from taleforge.narrator.adapters.consumer import prepare_jetstream
from taleforge.narrator.app import create_app
from taleforge.narrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream

from ...support import translate_advisories, wait_until_idle

pytestmark = pytest.mark.integration


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    yield js
    await nc.close()


def a_turn() -> TurnRequested:
    return TurnRequested(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=InputType.SPEECH,
        text="Who goes there?",
    )


async def events_on(js: JetStreamContext, subject: str) -> list[Any]:
    """Every stream event on `subject`, oldest first."""
    found, seq = [], 1
    while True:
        try:
            msg = await js.get_msg(STREAM_NAME, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(parse_event(msg.data or b""))
        seq = int(msg.seq or 0) + 1


async def exhaust(js: JetStreamContext, durable: str, count: int, max_deliver: int) -> None:
    """Take `count` messages `max_deliver` times each without acking (a handler that dies),
    then keep asking until the server has given up on all of them (advisories captured)."""
    sub = await js.pull_subscribe_bind(durable=durable, stream=STREAM_NAME)
    for _ in range(max_deliver):
        taken = 0
        async with asyncio.timeout(30):
            while taken < count:
                with_timeout = await sub.fetch(count - taken, timeout=10)
                taken += len(with_timeout)
    async with asyncio.timeout(30):
        while (await js.stream_info(ADVISORY_STREAM_NAME)).state.messages < count:
            try:
                assert not await sub.fetch(1, timeout=1)
            except NatsTimeoutError:
                pass
    await sub.unsubscribe()


async def test_a_turn_out_of_deliveries_fails_once_and_a_settled_one_is_left_alone(
    js: JetStreamContext, nats_url: str
) -> None:
    settings = Settings(
        nats_url=nats_url,
        openai_base_url="http://127.0.0.1:9/v1",  # never called: no narrator takes the turns
        ack_wait_s=1.0,
        max_deliver=2,
    )
    await prepare_jetstream(settings, js)
    lost, settled = a_turn(), a_turn()
    acks = [
        await js.publish(t.subject(), t.to_bytes(), headers=publish_headers(t))
        for t in (lost, settled)
    ]
    # `settled` got its outcome before the crash that used up its deliveries.
    earlier = TurnFailed(
        event_id=uuid.uuid5(settled.turn_id, TurnFailed.TYPE),
        session_id=settled.session_id,
        user_id=settled.user_id,
        turn_id=settled.turn_id,
        code="provider_auth",
        reason="The storyteller's key was refused.",
    )
    await js.publish(earlier.subject(), earlier.to_bytes())  # no msg id: never deduplicated
    await exhaust(js, settings.consumer_name, count=2, max_deliver=2)
    await translate_advisories(js, 2)  # persistence: two delivery.exhausted on STORY
    last = (await js.stream_info(STREAM_NAME)).state.last_seq

    app = create_app(settings)
    await app.start()
    try:
        await wait_until_idle(js, STREAM_NAME, settings.consumer_name, last)
    finally:
        await app.stop()

    [failed] = await events_on(js, event_subject(lost.session_id, TurnFailed.TYPE))
    assert failed.turn_id == lost.turn_id
    assert failed.code == "max_deliveries" and "2 attempts" in failed.reason
    assert failed.request_seq == acks[0].seq
    assert failed.event_id == uuid.uuid5(lost.turn_id, TurnFailed.TYPE)  # the narrator's own id
    [only] = await events_on(js, event_subject(settled.session_id, TurnFailed.TYPE))
    assert only.code == "provider_auth"


async def test_a_picture_lost_between_narration_and_request_is_requested_on_redelivery(
    js: JetStreamContext, nats_url: str
) -> None:
    settings = Settings(
        nats_url=nats_url,
        openai_base_url="http://127.0.0.1:9/v1",  # never called: the turn is narrated already
        ack_wait_s=1.0,
        max_deliver=3,
    )
    await prepare_jetstream(settings, js)
    turn = a_turn()
    await js.publish(turn.subject(), turn.to_bytes(), headers=publish_headers(turn))
    image_id = uuid.uuid5(turn.turn_id, "image:portrait")
    narration = NarrationCompleted(
        event_id=uuid.uuid5(turn.turn_id, NarrationCompleted.TYPE),
        session_id=turn.session_id,
        user_id=turn.user_id,
        turn_id=turn.turn_id,
        text="Brother Hesk turns from the bell. Its note hangs in the fog.",
        model="gpt-4.1-mini",
        image_ids=[image_id],
        illustration=IllustrationProposal(
            prompt="Brother Hesk at the drowned bell.",
            kind=ImageKind.PORTRAIT,
            characters=["Brother Hesk"],
        ),
    )
    await js.publish(narration.subject(), narration.to_bytes(), headers=publish_headers(narration))
    # The narrator that published it died before its ImageRequested and its ack.
    sub = await js.pull_subscribe_bind(durable=settings.consumer_name, stream=STREAM_NAME)
    assert len(await sub.fetch(1, timeout=10)) == 1
    await sub.unsubscribe()

    requested = event_subject(turn.session_id, ImageRequested.TYPE)
    app = create_app(settings)
    await app.start()
    try:
        async with asyncio.timeout(30):
            while not await events_on(js, requested):
                await asyncio.sleep(0.1)
    finally:
        await app.stop()

    [image] = await events_on(js, requested)
    assert image.event_id == uuid.uuid5(turn.turn_id, ImageRequested.TYPE)
    assert (image.image_id, image.kind) == (image_id, ImageKind.PORTRAIT)
    assert image.prompt == f"Brother Hesk at the drowned bell, {settings.image_style}"
    assert image.characters == ["Brother Hesk"]
    assert not await events_on(js, event_subject(turn.session_id, TurnFailed.TYPE))
    assert not await events_on(js, event_subject(turn.session_id, "narration.started"))
