"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes the plain `postgresql://` form of our SQLAlchemy URLs."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def translate_advisories(js: Any, count: int) -> None:
    """Run persistence's advisory translator until it has handled the first `count`
    MAX_DELIVERIES advisories (each a `delivery.exhausted` on STORY now)."""
    from taleforge.contracts.subjects import ADVISORY_STREAM_NAME
    from taleforge.persistence.adapters.advisories import DURABLE_NAME, AdvisoryTranslator

    translator = AdvisoryTranslator(js, fetch_timeout_s=0.5)
    await translator.start()
    try:
        await wait_until_idle(js, ADVISORY_STREAM_NAME, DURABLE_NAME, count)
    finally:
        await translator.stop()


async def wait_until_idle(js: Any, stream: str, durable: str, delivered: int) -> None:
    """Until the consumer has delivered up to stream seq `delivered` and nothing is pending."""
    from nats.js.errors import NotFoundError

    async with asyncio.timeout(30):
        while True:
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:  # created by the service as it starts
                await asyncio.sleep(0.1)
                continue
            if (
                not info.num_pending
                and not info.num_ack_pending
                and info.delivered.stream_seq >= delivered
            ):
                return
            await asyncio.sleep(0.1)
