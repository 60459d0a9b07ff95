"""The faults: each one strikes at a random moment, restores the stack, and times recovery.

Every fault returns a `FaultRecord`: when it struck (seconds into the storm), what was in
flight when it did (the evidence that it struck *mid*-something), how long the part was
down, and how long the stack took, after the part came back, to bring every turn accepted
before then to its player (or, for image faults, every image requested before then to a
final state in the read model).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import nats
from nats.errors import Error as NatsError

from taleforge.cli.dev import DevStack
from taleforge.contracts import STREAM_NAME, TurnRequested, event_subject, publish_headers

from ..support import asyncpg_dsn
from .players import Traffic
from .watch import BusWatcher

RECOVERY_TIMEOUT_S = 180.0
POISON_PHRASE = "[[cursed rune]]"


@dataclass
class FaultRecord:
    name: str
    at_s: float  # seconds into the storm when it struck
    in_flight: str  # what it interrupted
    down_s: float  # from striking until the part was back
    recovered_s: float | None = None  # from the part being back until all was settled again

    def line(self) -> str:
        recovered = "NOT RECOVERED" if self.recovered_s is None else f"{self.recovered_s:.1f} s"
        return (
            f"{self.name:<44} {self.at_s:>6.1f}s {self.down_s:>6.1f}s {recovered:>13}  "
            f"{self.in_flight}"
        )


@dataclass
class Storm:
    """What a fault needs: the stack, the players' traffic, the bus watcher, a seeded RNG."""

    stack: DevStack
    traffic: Traffic
    watcher: BusWatcher
    rng: random.Random
    say: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    poison_seqs: dict[int, str] = field(default_factory=dict)  # stream seq -> what it was

    @property
    def openai_url(self) -> str:
        return self.stack.openai_base_url.removesuffix("/v1")

    def now_s(self) -> float:
        return time.monotonic() - self.started

    # -- database --------------------------------------------------------------------------
    async def db_fetchval(self, sql: str, *args: Any) -> Any:
        """One query on a fresh connection (Postgres itself is stopped by one fault)."""
        conn = await asyncpg.connect(asyncpg_dsn(self.stack.database_url), timeout=5)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    # -- recovery --------------------------------------------------------------------------
    async def recovered(self, since: float, *, images: bool = False) -> float | None:
        """Seconds from `since` (monotonic) until the stack has caught up with everything
        before it: every turn accepted by then has reached its player (last event seen),
        persistence has projected all the stream held then, and (with `images`) no picture
        requested by then is still pending in the read model."""
        since_wall = datetime.fromtimestamp(time.time() - (time.monotonic() - since), UTC)
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        last_seq: int | None = None
        while time.monotonic() < deadline:
            try:
                if last_seq is None:
                    last_seq = await self._stream_last_seq()
                waiting = [t for t in self.traffic.accepted_before(since) if t.outcome is None]
                if not waiting and await self._persistence_ack_floor() >= last_seq:
                    pending = 0
                    if images:
                        pending = await self.db_fetchval(
                            "SELECT count(*) FROM images"
                            " WHERE status = 'pending' AND requested_at <= $1",
                            since_wall,
                        )
                    if pending == 0:
                        return time.monotonic() - since
            except (OSError, asyncpg.PostgresError, NatsError, TimeoutError):
                pass  # a part is still coming back
            await asyncio.sleep(0.2)
        return None

    async def _stream_last_seq(self) -> int:
        nc = await nats.connect(self.stack.nats_url, max_reconnect_attempts=0)
        try:
            return int((await nc.jetstream().stream_info(STREAM_NAME)).state.last_seq)
        finally:
            await nc.close()

    async def _persistence_ack_floor(self) -> int:
        nc = await nats.connect(self.stack.nats_url, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream().consumer_info(STREAM_NAME, "persistence")
            return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        finally:
            await nc.close()

    # -- sandboxes -------------------------------------------------------------------------
    async def openai_faults(self, **faults: Any) -> None:
        """Replace the OpenAI sandbox's faults (the poison phrase always stays on)."""
        async with httpx.AsyncClient(base_url=self.openai_url, timeout=10) as http:
            body = {"reject_phrase": POISON_PHRASE, **faults}
            (await http.put("/_sandbox/faults", json=body)).raise_for_status()

    async def openai_stats(self) -> dict[str, int]:
        async with httpx.AsyncClient(base_url=self.openai_url, timeout=10) as http:
            stats: dict[str, int] = (await http.get("/_sandbox/stats")).json()
            return stats

    async def comfyui_faults(self, **faults: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.stack.comfyui_url, timeout=10) as http:
            response = await http.put("/_sandbox/faults", json=faults) if faults else None
            if response is not None:
                response.raise_for_status()
            current: dict[str, Any] = (await http.get("/_sandbox/faults")).json()
            return current


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _restart_service(storm: Storm, name: str) -> None:
    await asyncio.to_thread(storm.stack.restart, name)


# -- kill -9 of the services ---------------------------------------------------------------
async def kill_narrator_mid_stream(storm: Storm) -> FaultRecord:
    await _until(lambda: bool(storm.watcher.streaming_turns()), 60, "a narration streaming")
    await asyncio.sleep(storm.rng.uniform(0, 0.3))
    await _until(lambda: bool(storm.watcher.streaming_turns(0.2)), 60, "a narration streaming")
    streaming = storm.watcher.streaming_turns()
    at, struck = storm.now_s(), time.monotonic()
    storm.stack.kill("narrator")
    await asyncio.sleep(storm.rng.uniform(0.2, 2.0))
    await _restart_service(storm, "narrator")
    back = time.monotonic()
    record = FaultRecord(
        "kill -9 narrator", at, f"{len(streaming)} narrations streaming", back - struck
    )
    record.recovered_s = await storm.recovered(back)
    return record


async def kill_illustrator_mid_render(storm: Storm) -> FaultRecord:
    await _until(lambda: bool(storm.watcher.rendering_images()), 120, "a render in progress")
    await asyncio.sleep(storm.rng.uniform(0, 0.3))
    await _until(lambda: bool(storm.watcher.rendering_images(0.3)), 120, "a render in progress")
    rendering = storm.watcher.rendering_images()
    at, struck = storm.now_s(), time.monotonic()
    storm.stack.kill("illustrator")
    await asyncio.sleep(storm.rng.uniform(0.2, 2.0))
    await _restart_service(storm, "illustrator")
    back = time.monotonic()
    record = FaultRecord(
        "kill -9 illustrator", at, f"{len(rendering)} render(s) in progress", back - struck
    )
    record.recovered_s = await storm.recovered(back, images=True)
    return record


_BLOCKED_WRITER = """
    SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND wait_event_type = 'Lock' AND xact_start IS NOT NULL
     LIMIT 1
"""


async def kill_persistence_mid_transaction(storm: Storm) -> FaultRecord:
    """Hold a lock that persistence's next write waits on, so its transaction is open (it
    has recorded event ids, not yet projected them) when the process is killed."""
    dsn = asyncpg_dsn(storm.stack.database_url)
    conn, watch = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(storm.rng.uniform(0, 1.0))
        tx = conn.transaction()
        await tx.start()
        # SHARE blocks writers of `turns` (persistence) and lets readers (the API) through.
        await conn.execute("LOCK TABLE turns IN SHARE MODE")
        deadline = time.monotonic() + 60
        blocked = None
        while blocked is None and time.monotonic() < deadline:
            # Another connection: inside a transaction pg_stat_activity is a frozen snapshot.
            blocked = await watch.fetchrow(_BLOCKED_WRITER)
            if blocked is None:
                await asyncio.sleep(0.02)
        assert blocked is not None, "persistence never wrote to turns while the lock was held"
        await asyncio.sleep(storm.rng.uniform(0, 0.5))
        at, struck = storm.now_s(), time.monotonic()
        storm.stack.kill("persistence")
        await tx.rollback()  # the lock goes; the killed client's transaction rolls back
    finally:
        await conn.close()
        await watch.close()
    await asyncio.sleep(storm.rng.uniform(0.2, 2.0))
    await _restart_service(storm, "persistence")
    back = time.monotonic()
    record = FaultRecord(
        "kill -9 persistence",
        at,
        f"its transaction open, waiting on a lock (backend {blocked[0]})",
        back - struck,
    )
    record.recovered_s = await storm.recovered(back)
    return record


async def kill_api_replica(storm: Storm) -> FaultRecord:
    name = storm.stack.api_name(1)
    url = storm.stack.api_urls[1]
    await asyncio.sleep(storm.rng.uniform(0, 1.0))
    await _until(lambda: storm.traffic.in_flight[url] > 0, 60, "a request on the replica")
    in_flight = storm.traffic.in_flight[url]
    at, struck = storm.now_s(), time.monotonic()
    storm.stack.kill(name)
    await asyncio.sleep(storm.rng.uniform(0.5, 2.0))
    await _restart_service(storm, name)
    await _wait_ready(url)
    back = time.monotonic()
    record = FaultRecord("kill -9 API replica", at, f"{in_flight} request(s)", back - struck)
    record.recovered_s = await storm.recovered(back)
    return record


async def _wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not become ready again")


# -- infrastructure ------------------------------------------------------------------------
def _open_turns(storm: Storm) -> int:
    return sum(1 for t in storm.traffic.accepted if t.outcome is None)


async def restart_nats(storm: Storm) -> FaultRecord:
    """kill -9 of nats-server mid-turns; the same port and store directory come back."""
    await _until(lambda: _open_turns(storm) > 0, 60, "turns in flight")
    await asyncio.sleep(storm.rng.uniform(0, 0.5))
    in_flight = _open_turns(storm)
    nats_server = storm.stack.nats
    assert nats_server is not None
    at, struck = storm.now_s(), time.monotonic()
    nats_server.kill()
    await asyncio.sleep(storm.rng.uniform(1.0, 3.0))
    await asyncio.to_thread(nats_server.start)
    back = time.monotonic()
    record = FaultRecord("NATS restart (kill -9)", at, f"{in_flight} turns open", back - struck)
    record.recovered_s = await storm.recovered(back)
    return record


POSTGRES_DOWN_S = 20.0


async def stop_postgres(storm: Storm) -> FaultRecord:
    await _until(lambda: _open_turns(storm) > 0, 60, "turns in flight")
    in_flight = _open_turns(storm)
    postgres = storm.stack.postgres
    assert postgres is not None
    at, struck = storm.now_s(), time.monotonic()
    await asyncio.to_thread(postgres.stop)
    await asyncio.sleep(max(0.0, POSTGRES_DOWN_S - (time.monotonic() - struck)))
    await asyncio.to_thread(postgres.start)
    back = time.monotonic()
    record = FaultRecord("Postgres stopped 20 s", at, f"{in_flight} turns open", back - struck)
    record.recovered_s = await storm.recovered(back)
    return record


# -- the sandboxes' faults -----------------------------------------------------------------
async def _openai_storm(
    storm: Storm, name: str, counter: str, count: int, **faults: Any
) -> FaultRecord:
    at, struck = storm.now_s(), time.monotonic()
    await storm.openai_faults(**faults)  # resets the sandbox's counters
    deadline = time.monotonic() + 180
    while (await storm.openai_stats())[counter] < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    hit = (await storm.openai_stats())[counter]
    await storm.openai_faults()
    back = time.monotonic()
    record = FaultRecord(name, at, f"{hit} model calls while it lasted", back - struck)
    record.recovered_s = await storm.recovered(back)
    return record


async def openai_429_storm(storm: Storm) -> FaultRecord:
    n = storm.rng.randint(15, 30)
    return await _openai_storm(
        storm, f"OpenAI 429 storm ({n})", "calls", n, rate_limit_first_n=n, retry_after_s=0.5
    )


async def openai_500s(storm: Storm) -> FaultRecord:
    n = storm.rng.randint(6, 12)
    return await _openai_storm(storm, f"OpenAI 500s ({n})", "calls", n, server_error_next_n=n)


async def openai_broken_streams(storm: Storm) -> FaultRecord:
    """Dropped connections, stalls, malformed lines and error events, mid-stream."""
    kind = storm.rng.choice(["drop", "stall", "malformed", "error"])
    after = storm.rng.randint(1, 5)
    n = storm.rng.randint(3, 6)
    knob = {
        "drop": {"drop_after_deltas": after},
        "stall": {"stall_after_deltas": after},  # until the narrator's stall timeout
        "malformed": {"malformed_after_deltas": after},
        "error": {"error_event_after_deltas": after},
    }[kind]
    return await _openai_storm(
        storm,
        f"OpenAI streams: {kind} after {after} deltas ({n})",
        "streamed_calls",
        n,
        stream_fault_calls=n,
        **knob,
    )


async def comfyui_faults(storm: Storm) -> FaultRecord:
    """Execution errors, then a hung render (interrupted by the illustrator's render
    timeout), then dropped websockets. One after another: the sandbox draws every armed
    fault for the same run, and a failing run would hide the hang and the drop."""
    faults = {
        "fail_next": storm.rng.randint(1, 3),
        "hang_next": 1,
        "drop_socket_next": storm.rng.randint(1, 2),
    }
    at, struck = storm.now_s(), time.monotonic()
    for name, count in faults.items():
        await storm.comfyui_faults(**{name: count})
        deadline = time.monotonic() + 120
        while (await storm.comfyui_faults())[name] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    back = time.monotonic()
    described = ", ".join(f"{k}={v}" for k, v in faults.items())
    record = FaultRecord("ComfyUI faults", at, described, back - struck)
    record.recovered_s = await storm.recovered(back, images=True)
    return record


# -- poison --------------------------------------------------------------------------------
async def poison_events(storm: Storm) -> FaultRecord:
    """Publish a malformed event and events of an unknown schema_version straight onto the
    stream (the API would never let them through); each must become a dead letter."""
    session = next(t.session_id for t in storm.traffic.accepted)
    turn = TurnRequested(
        session_id=uuid.UUID(session),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type="action",
        text="from the future",
    )
    future = turn.model_dump(mode="json") | {"schema_version": 99}
    image_future = {**future, "type": "image.requested", "image_id": str(uuid.uuid4())}
    image_future.update(prompt="a picture from the future", event_id=str(uuid.uuid4()))
    poison = [
        ("malformed JSON", event_subject(session, "turn.requested"), b'{"type": "turn.req'),
        ("turn.requested v99", turn.subject(), json.dumps(future).encode()),
        (
            "image.requested v99",
            event_subject(session, "image.requested"),
            json.dumps(image_future).encode(),
        ),
    ]
    at, struck = storm.now_s(), time.monotonic()
    nc = await nats.connect(storm.stack.nats_url)
    try:
        js = nc.jetstream()
        for what, subject, payload in poison:
            headers = publish_headers(turn) | {"Nats-Msg-Id": str(uuid.uuid4())}
            ack = await js.publish(subject, payload, headers=headers, stream=STREAM_NAME)
            storm.poison_seqs[ack.seq] = what
    finally:
        await nc.close()
    back = time.monotonic()
    seqs = list(storm.poison_seqs)
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    recovered = None
    while time.monotonic() < deadline:
        try:
            found = await storm.db_fetchval(
                "SELECT count(*) FROM dead_letters WHERE stream_seq = ANY($1::bigint[])", seqs
            )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            found = None
        if found == len(seqs):
            recovered = time.monotonic() - back
            break
        await asyncio.sleep(0.1)
    names = ", ".join(what for what, _, _ in poison)
    return FaultRecord("poison events on the stream", at, names, back - struck, recovered)


Fault = Callable[[Storm], Awaitable[FaultRecord]]

FAULTS: list[Fault] = [
    kill_narrator_mid_stream,
    kill_illustrator_mid_render,
    kill_persistence_mid_transaction,
    kill_api_replica,
    restart_nats,
    stop_postgres,
    openai_429_storm,
    openai_500s,
    openai_broken_streams,
    openai_broken_streams,
    comfyui_faults,
    poison_events,
]
