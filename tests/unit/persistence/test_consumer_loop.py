"""The persistence pull loop outlives a batch that fails in an unforeseen way.

Found by the fault suite: one batch raised (an empty fetch reached `decide_batch`), the
loop's task ended silently, and persistence stayed up consuming nothing while the stream
grew. Now the error is logged and the next fetch goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taleforge.persistence.consumer import EventConsumer
from taleforge.persistence.delivery import RetryPolicy


class BrokenMessage:
    subject = "story.events.x.turn.requested"
    headers: dict[str, str] = {}

    @property
    def metadata(self) -> Any:
        raise RuntimeError("a bug while reading a message")


class FakeSubscription:
    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer
        self.fetches = 0

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        self.fetches += 1
        if self.fetches == 1:
            return [BrokenMessage()]
        self.consumer._stopping.set()
        raise TimeoutError

    async def unsubscribe(self) -> None:
        pass


async def test_a_failing_batch_does_not_end_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    consumer = EventConsumer(store=None, policy=RetryPolicy(), durable="p", batch_size=10)  # type: ignore[arg-type]
    sub = FakeSubscription(consumer)
    await asyncio.wait_for(consumer._run(sub), 5)  # type: ignore[arg-type]
    assert sub.fetches == 2
    assert "applying a batch from p failed" in caplog.text
