"""A turn's feed hands out what is already waiting as one batch (one SSE write), with the
same events and ids, in the same order, as one at a time; without servers (the messages are
put on the feed's queue as its subscriptions would)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from taleforge.api.streaming.cursor import Cursor
from taleforge.api.streaming.feed import LIVE, STORY, Emitted, TurnFeed
from taleforge.contracts import ImageRequested, InputType, NarrationDelta, TurnRequested

SESSION, USER, TURN = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
COMMON = {"session_id": SESSION, "user_id": USER, "turn_id": TURN}
START = 7


@dataclass
class FakeMsg:
    data: bytes
    seq: int
    metadata: Any = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = SimpleNamespace(
            sequence=SimpleNamespace(stream=self.seq), timestamp=datetime.now(UTC)
        )


class QueuedFeed(TurnFeed):
    """A feed whose subscriptions are the messages put on its queue by the test."""

    def __init__(self) -> None:
        super().__init__(None, session_id=SESSION, turn_id=TURN, cursor=Cursor.beginning(START))  # type: ignore[arg-type]

    async def _subscribe(self) -> None:
        return None


def _requested() -> FakeMsg:
    event = TurnRequested(
        event_id=uuid.uuid4(), input_type=InputType.ACTION, text="I walk on", **COMMON
    )
    return FakeMsg(event.to_bytes(), START)


def _delta(index: int, live_seq: int) -> FakeMsg:
    event = NarrationDelta(event_id=uuid.uuid4(), index=index, delta=f"w{index} ", **COMMON)
    return FakeMsg(event.to_bytes(), live_seq)


async def test_what_is_waiting_comes_as_one_batch_in_order() -> None:
    feed = QueuedFeed()
    # A delta that overtook the turn's request waits for it (the client hears of the turn
    # first), then everything queued comes out together.
    feed._queue.put_nowait((LIVE, _delta(0, 1)))
    feed._queue.put_nowait((STORY, _requested()))
    feed._queue.put_nowait((LIVE, _delta(1, 2)))
    batches = feed.batches(idle_s=0.05)
    first = await anext(batches)
    assert first is not None
    assert [e.event.event for e in first] == [
        "turn.accepted",
        "narration.delta",
        "narration.delta",
    ]
    assert [e.id for e in first] == [f"{START}-{START}-0-0", f"{START}-{START}-1-1", "7-7-2-1"]
    # Nothing waiting: a heartbeat (None) after idle_s, never an empty batch.
    assert await anext(batches) is None
    feed._queue.put_nowait((LIVE, _delta(2, 3)))
    third = await anext(batches)
    assert third is not None and [e.id for e in third] == ["7-7-3-1"]
    await batches.aclose()


async def test_events_are_the_batches_one_by_one() -> None:
    feed = QueuedFeed()
    for item in [(STORY, _requested()), (LIVE, _delta(0, 1)), (LIVE, _delta(1, 2))]:
        feed._queue.put_nowait(item)  # type: ignore[arg-type]
    events = feed.events(idle_s=0.05)
    got: list[Emitted] = []
    while len(got) < 3:
        item = await anext(events)
        assert item is not None
        got.append(item)
    await events.aclose()
    assert [e.id for e in got] == ["7-7-0-0", "7-7-1-1", "7-7-2-1"]


async def test_a_story_event_after_live_ones_starts_a_new_batch() -> None:
    # Handling a story event may wait on NATS; the deltas before it must not wait with it.
    feed = QueuedFeed()
    image = ImageRequested(event_id=uuid.uuid4(), image_id=uuid.uuid4(), prompt="a road", **COMMON)
    for item in [
        (STORY, _requested()),
        (LIVE, _delta(0, 1)),
        (STORY, FakeMsg(image.to_bytes(), START + 1)),
    ]:
        feed._queue.put_nowait(item)  # type: ignore[arg-type]
    batches = feed.batches(idle_s=0.05)
    first, second = await anext(batches), await anext(batches)
    await batches.aclose()
    assert first is not None and second is not None
    assert [e.event.event for e in first] == ["turn.accepted", "narration.delta"]
    assert [e.event.event for e in second] == ["image.requested"]
