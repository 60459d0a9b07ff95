"""What the services keep in NATS survives a restart of the server (same port, same store).

Found by the fault suite (tests/faults): memory-storage streams and buckets are gone after
a nats-server restart. With the API's turn locks in memory, every turn answered 503 until
the API itself was restarted; with LIVE in memory, no turn could be followed (SSE) until
persistence was restarted to declare it again.
"""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from taleforge.api.limits import rate, turn_lock
from taleforge.cli.embedded import EmbeddedNats
from taleforge.contracts import LIVE_STREAM_NAME, STREAM_NAME
from taleforge.persistence.adapters.event_log import ensure_stream

pytestmark = pytest.mark.integration


async def test_streams_and_buckets_survive_a_nats_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_stream(js)
        await turn_lock.open_bucket(js, ttl_s=60)
        await rate.open_bucket(js)
        await nc.close()

        server.kill()  # a crash: no shutdown of its own
        server.start()

        nc = await nats.connect(server.url)
        js = nc.jetstream()
        for name in (
            STREAM_NAME,
            LIVE_STREAM_NAME,
            f"KV_{turn_lock.BUCKET}",
            f"KV_{rate.BUCKET}",
        ):
            await js.stream_info(name)  # NotFoundError if it did not survive
        await nc.close()
    finally:
        server.stop()
