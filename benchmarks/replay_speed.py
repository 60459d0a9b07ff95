"""Replay speed on a 10k-event session: timeline read, show-prompt, re-narration, rebuild.

The session is told by the real `Narrator` (prompt building, memory folds, prompt records)
with an instant in-memory model, then published to a fresh embedded NATS, so its events
are what a long live session leaves: turn.requested, narration.started, narration.completed
(with its prompt record), image.requested, and a memory.folded every few turns. Measured:

- `taleforge events --session S` (read, parse, format; text and --json) in events/s,
  in-process, and the command end to end (interpreter start-up included);
- `taleforge show-prompt` of the last turn (the whole session read and its state rebuilt);
- `taleforge replay --renarrate --from-turn N` of the last 20 turns on the OpenAI sandbox
  (no token delay): turns/s of the replay machinery, the model being instant;
- `taleforge replay --rebuild --into URL` (the persistence rebuild) into embedded Postgres.

Run: `python -m benchmarks replay_speed` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

import nats

from taleforge.cli.embedded import EmbeddedNats, EmbeddedPostgres
from taleforge.cli.events import Selection, show
from taleforge.cli.replay.renarrate import ReplayReport, renarrate
from taleforge.cli.replay.scratch import ScratchBus, ScratchDelivery, ScratchStore
from taleforge.cli.show_prompt import rebuild_prompt
from taleforge.contracts import (
    Envelope,
    InputType,
    SessionStarted,
    TokenUsage,
    TurnRequested,
    publish_headers,
)
from taleforge.contracts.events import ScenarioSnapshot
from taleforge.narrator.live_settings import FixedSettings
from taleforge.narrator.model import ModelCall, ModelReply, OnDelta
from taleforge.narrator.narration import Narrator, NarratorConfig, RetryPolicy
from taleforge.narrator.prompting import Prompt
from taleforge.narrator.settings import Settings
from taleforge.narrator.tokens import ApproxTokenCounter
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.persistence.rebuild import rebuild
from taleforge.sandboxes.openai import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

SESSION_EVENTS = 10_000
RENARRATED_TURNS = 20
BEAT = (
    "Under a bruised violet sky, a raven lands on the broken well and watches without "
    "blinking. The innkeeper sets down his cup and will not meet your eyes. "
)


class InstantModel:
    async def narrate(self, prompt: Prompt, call: ModelCall, *, on_delta: OnDelta) -> ModelReply:
        text = BEAT + f"You said: {prompt.player_text[:60]}"
        await on_delta(text)
        usage = TokenUsage(input_tokens=prompt.tokens(ApproxTokenCounter()), output_tokens=60)
        return ModelReply(text, call.model, usage, "resp_bench")

    async def summarize(self, instructions: str, text: str, call: ModelCall) -> ModelReply:
        summary = "The diver searched the drowned city, stone by stone. " * 4
        return ModelReply(summary, call.model, TokenUsage(input_tokens=400, output_tokens=80), "s")


async def tell_session() -> list[Envelope]:
    """A session of at least SESSION_EVENTS events, told by the real narrator."""
    bus, store = ScratchBus(None, "bench"), ScratchStore()
    settings = Settings()
    narrator = Narrator(
        bus=bus,
        model=InstantModel(),
        store=store,
        story_log=_NoLog(),
        settings=FixedSettings(settings.live_defaults()),
        counter=ApproxTokenCounter(),
        config=NarratorConfig(
            retry=RetryPolicy(max_deliver=1, backoff_s=0, backoff_max_s=0, heartbeat_s=60),
            image_style="ink",
            prices=settings.prices,
        ),
    )
    started = SessionStarted(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        scenario_id="bench",
        title="The Drowned Bell",
        opening="Fog rolls over the harbour as the bell tolls beneath the water.",
        scenario=ScenarioSnapshot(world="A drowned city whose bells still ring."),
    )
    events: list[Envelope] = [started]
    await narrator.handle(started, ScratchDelivery())
    n = 0
    while len(events) < SESSION_EVENTS:
        n += 1
        turn = TurnRequested(
            session_id=started.session_id,
            user_id=started.user_id,
            turn_id=uuid.uuid4(),
            input_type=InputType.ACTION,
            text=f"I search the ruins for the {n}th bell",
        )
        events.append(turn)
        await narrator.handle(turn, ScratchDelivery())
        events += bus.by_turn.pop(turn.turn_id, [])
    return events


class _NoLog:
    async def session_started(self, session_id: uuid.UUID) -> None:
        return None

    async def settled(self, session_id: uuid.UUID, turn_id: uuid.UUID) -> None:
        return None


async def publish(nats_url: str, events: list[Envelope]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        for event in events:
            headers = publish_headers(event)
            await js.publish_async(event.subject(), event.to_bytes(), headers=headers)
            if js.publish_async_pending() >= 2000:
                await js.publish_async_completed()
        await js.publish_async_completed()
    finally:
        await nc.close()


async def timed(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def main() -> None:
    started = time.perf_counter()
    events = await tell_session()
    session_id = events[0].session_id
    turns = [e for e in events if isinstance(e, TurnRequested)]
    folds = sum(1 for e in events if e.type == "memory.folded")
    total = len(events)
    print(
        f"session: {total} events ({len(turns)} turns, {folds} memory folds) told by the "
        f"narrator in {time.perf_counter() - started:.1f}s"
    )
    with tempfile.TemporaryDirectory(prefix="tf-bench-replay-") as tmp:
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        postgres = EmbeddedPostgres(Path(tmp) / "pg", database="postgres")
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(postgres.start)
        url = nats_server.url
        try:
            await publish(url, events)
            for label, as_json in (("text", False), ("--json", True)):
                out = io.StringIO()
                seconds = await timed(
                    show(url, Selection(session=session_id), as_json=as_json, out=out)
                )
                assert out.getvalue().count("\n") >= total
                print(
                    f"events --session ({label}): {total} events in {seconds:.2f}s = "
                    f"{total / seconds:,.0f} events/s (read + parse + format, in-process)"
                )

            command = [sys.executable, "-m", "taleforge.cli", "events", "--session"]
            began = time.perf_counter()
            subprocess.run(
                [*command, str(session_id), "--nats-url", url],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - began
            print(
                f"`taleforge events --session S > /dev/null`: {seconds:.2f}s end to end = "
                f"{total / seconds:,.0f} events/s (interpreter start-up included)"
            )

            began = time.perf_counter()
            rebuilt = await rebuild_prompt(url, turns[-1].turn_id)
            seconds = time.perf_counter() - began
            print(
                f"show-prompt of turn #{len(turns)} (scan for its session, read {total} "
                f"events, rebuild the state): {seconds:.2f}s, {rebuilt.check.value}"
            )

            with serve_in_thread(create_sandbox()) as sandbox:
                settings = Settings(nats_url=url, openai_base_url=f"{sandbox}/v1")
                first = len(turns) - RENARRATED_TURNS + 1
                report = ReplayReport(session_id, "bench", first, "gpt-4.1", None)
                began = time.perf_counter()
                await renarrate(url, session_id, report, settings=settings, progress=False)
                seconds = time.perf_counter() - began
            print(
                f"replay --renarrate --from-turn {first}: {len(report.turns)} turns in "
                f"{seconds:.2f}s = {len(report.turns) / seconds:.1f} turns/s (reading the "
                f"{total}-event session included; sandbox model, no token delay)"
            )

            postgres.create_database("bench_replay")
            # Persistence records memory.folded without projecting it, with a warning each.
            logging.getLogger("taleforge.persistence.projection").setLevel(logging.ERROR)
            report_db = await rebuild(postgres.url("bench_replay"), url, progress=False)
            print(
                f"replay --rebuild: {report_db.events} events in {report_db.seconds:.1f}s = "
                f"{report_db.rate:,.0f} events/s (migrations included)"
            )
        finally:
            await asyncio.to_thread(postgres.stop)
            await asyncio.to_thread(nats_server.stop)


if __name__ == "__main__":
    asyncio.run(main())
