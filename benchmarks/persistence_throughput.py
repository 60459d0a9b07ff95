"""Persistence throughput: events applied per second by one persistence process, batched and
unbatched side by side, and rebuild speed for a 100k-event log.

A synthetic log (sessions of turns: requested, narration started and completed, image
requested and completed) goes into a fresh embedded NATS. The service runs as its own
process (`python -m taleforge.persistence`) on a backlog of `LIVE_EVENTS`, once with
PERSISTENCE_BATCH_SIZE=100 and once with 1, each into its own database with its own durable
consumer; the rate is events over the span of their `processed_at` stamps. Then the log is
topped up to `REBUILD_EVENTS` and rebuilt into an empty database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
from nats.js import JetStreamContext

from taleforge.cli.embedded import EmbeddedNats, EmbeddedPostgres
from taleforge.contracts import (
    Envelope,
    ImageCompleted,
    ImageRequested,
    NarrationCompleted,
    NarrationStarted,
    SessionStarted,
    TokenUsage,
    TurnRequested,
    publish_headers,
)
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.persistence.rebuild import rebuild

LIVE_EVENTS = 6_000
REBUILD_EVENTS = 100_000
TURNS_PER_SESSION = 10
USERS = 500
LIVE_BATCH = 100


def synthetic_log() -> Iterator[Envelope]:
    """Sessions of complete turns, one session after another, endlessly."""
    users = [uuid.uuid4() for _ in range(USERS)]
    n = 0
    while True:
        user_id, session_id = users[n % USERS], uuid.uuid4()
        n += 1
        yield SessionStarted(
            session_id=session_id, user_id=user_id, scenario_id="bench", title=f"Tale {n}"
        )
        for t in range(TURNS_PER_SESSION):
            turn_id = uuid.uuid4()
            ids = {"session_id": session_id, "user_id": user_id, "turn_id": turn_id}
            image_id = uuid.uuid5(turn_id, "image:scene")
            usage = TokenUsage(input_tokens=900, cached_tokens=600, output_tokens=150)
            yield TurnRequested(**ids, input_type="action", text=f"I walk on ({t})")
            yield NarrationStarted(**ids, model="bench")
            yield NarrationCompleted(
                **ids, text="The road bends. " * 20, model="bench", usage=usage, cost_usd=0.0004
            )
            yield ImageRequested(**ids, image_id=image_id, prompt="a bend in the road", seed=t)
            yield ImageCompleted(
                **ids,
                image_id=image_id,
                bucket="taleforge-images",
                object_name=f"{image_id}.png",
                size_bytes=300_000,
                sha256="0" * 64,
                width=512,
                height=512,
            )


async def publish(js: JetStreamContext, events: Iterator[Envelope], count: int) -> None:
    for _ in range(count):
        event = next(events)
        await js.publish_async(event.subject(), event.to_bytes(), headers=publish_headers(event))
        if js.publish_async_pending() >= 2000:
            await js.publish_async_completed()
    await js.publish_async_completed()


async def _progress(db_url: str) -> tuple[int, float]:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n,"
            " extract(epoch FROM max(processed_at) - min(processed_at)) AS span"
            " FROM processed_events"
        )
    except asyncpg.UndefinedTableError:  # not migrated yet
        return 0, 0.0
    finally:
        await conn.close()
    return int(row["n"]), float(row["span"] or 0.0)


async def live_rate(nats_url: str, db_url: str, *, batch_size: int, label: str) -> float:
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "DATABASE_URL": db_url,
        "PERSISTENCE_CONSUMER": f"bench_{label}",
        "PERSISTENCE_BATCH_SIZE": str(batch_size),
        "PERSISTENCE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "taleforge.persistence", "run"], env=env)
    try:
        deadline = time.monotonic() + 150
        while True:
            done, span = await _progress(db_url)
            if done >= LIVE_EVENTS:
                return done / span
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{label}: {done} of {LIVE_EVENTS} applied")
            await asyncio.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        postgres = EmbeddedPostgres(Path(tmp) / "pg", database="postgres")
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(postgres.start)
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            events = synthetic_log()
            started = time.perf_counter()
            await publish(js, events, LIVE_EVENTS)
            print(f"log: {LIVE_EVENTS} events published in {time.perf_counter() - started:.1f}s")

            rates = {}
            for label, batch_size in (("batched", LIVE_BATCH), ("unbatched", 1)):
                postgres.create_database(f"bench_{label}")
                rates[label] = await live_rate(
                    nats_server.url,
                    postgres.url(f"bench_{label}"),
                    batch_size=batch_size,
                    label=label,
                )
            print(
                f"live, one process, {LIVE_EVENTS} events backlog:"
                f" batched (PERSISTENCE_BATCH_SIZE={LIVE_BATCH}) {rates['batched']:.0f} events/s,"
                f" unbatched (1) {rates['unbatched']:.0f} events/s,"
                f" ratio {rates['batched'] / rates['unbatched']:.1f}x"
            )

            await publish(js, events, REBUILD_EVENTS - LIVE_EVENTS)
            postgres.create_database("bench_rebuild")
            report = await rebuild(postgres.url("bench_rebuild"), nats_server.url, progress=False)
            print(
                f"rebuild: {report.events} events in {report.seconds:.1f}s"
                f" = {report.rate:.0f} events/s (batch 500, migration included)"
            )
        finally:
            await nc.close()
            await asyncio.to_thread(postgres.stop)
            await asyncio.to_thread(nats_server.stop)


if __name__ == "__main__":
    asyncio.run(main())
