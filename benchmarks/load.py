"""Load run: N players play through the API at once, for a fixed time, on loopback.

The whole stack runs as processes (two API replicas, narrator, illustrator, persistence,
real NATS and Postgres) with the sandboxes at realistic latencies: the OpenAI sandbox
waits LOAD_TTFT_MS before a reply's first token and LOAD_TOKEN_MS between tokens; ComfyUI
takes LOAD_RENDER_MS per picture, one at a time, as a real one does. Each player starts a
session, then plays turn after turn: POST /api/story/progress and follow the turn's events
(SSE when the API serves them: time to first delta and to `narration.completed` as the
player sees them; else 202 + polling, with the first delta taken off the live channel),
then thinks for about LOAD_THINK_S before the next turn.

Figures count turns *sent* after the warm-up (LOAD_WARMUP_S) and before the end of the
measured window (LOAD_DURATION_S); turns still open at the end get LOAD_GRACE_S to finish.
Errors are counted by kind; none are expected (no faults are injected here). Peak RSS is
sampled every 0.5 s per process (Postgres: the sum over its processes of their PSS).

    python -m benchmarks load                      # defaults below
    LOAD_PLAYERS=50 LOAD_DURATION_S=30 python -m benchmarks load
    python -m benchmarks.load --players 50 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil

from taleforge.cli.dev import DURABLE_CONSUMERS, DevConfig, DevStack
from taleforge.cli.processes import LogSink
from taleforge.cli.tokens import mint_token
from taleforge.contracts import LIVE_PREFIX, STREAM_NAME

INPUTS = [
    ("speech", "Who goes there?"),
    ("action", "I light the lantern and raise it high."),
    ("speech", "Where has the ferryman gone?"),
    ("action", "I search the ferryman's hut."),
    ("action", "I follow the reed path north."),
    ("speech", "Tell me about the drowned chapel."),
]


@dataclass
class LoadConfig:
    players: int = 200
    duration_s: float = 60.0
    warmup_s: float = 10.0
    grace_s: float = 60.0
    think_s: float = 1.0
    ttft_ms: int = 300
    token_ms: int = 20
    render_ms: int = 3000
    api_replicas: int = 2
    image_policy: str = "on_scene_change"

    @classmethod
    def from_env(cls) -> LoadConfig:
        env = os.environ
        base = cls()
        return cls(
            players=int(env.get("LOAD_PLAYERS", base.players)),
            duration_s=float(env.get("LOAD_DURATION_S", base.duration_s)),
            warmup_s=float(env.get("LOAD_WARMUP_S", base.warmup_s)),
            grace_s=float(env.get("LOAD_GRACE_S", base.grace_s)),
            think_s=float(env.get("LOAD_THINK_S", base.think_s)),
            ttft_ms=int(env.get("LOAD_TTFT_MS", base.ttft_ms)),
            token_ms=int(env.get("LOAD_TOKEN_MS", base.token_ms)),
            render_ms=int(env.get("LOAD_RENDER_MS", base.render_ms)),
            api_replicas=int(env.get("LOAD_API_REPLICAS", base.api_replicas)),
            image_policy=env.get("LOAD_IMAGE_POLICY", base.image_policy),
        )

    def service_env(self) -> dict[str, str]:
        return {
            # One model call per player at most: the narrator's concurrency is not the limit.
            "NARRATOR_CONCURRENCY": str(max(16, self.players)),
            "NARRATOR_IMAGE_POLICY": self.image_policy,
            "API_LOG_LEVEL": "WARNING",
            # Per-player limits are not what is measured (a player here plays far faster
            # than a person reads).
            "API_RATE_LIMIT_PER_MIN": "0",
            "API_DAILY_TOKEN_BUDGET": "0",
            "API_DAILY_COST_BUDGET_USD": "0",
        }


@dataclass
class TurnSample:
    sent_at: float
    first_delta_s: float | None = None
    narrated_s: float | None = None
    outcome: str | None = None


@dataclass
class Results:
    samples: list[TurnSample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    mode: str = "?"


# -- the players -----------------------------------------------------------------------------
async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


class LiveFirstDeltas:
    """Polling mode: first deltas as seen on the live channel (the API streams none)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self._nc: Any = None

    async def start(self, nats_url: str) -> None:
        self._nc = await nats.connect(nats_url)

        async def on_live(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                body = json.loads(msg.data)
                if body.get("type") == "narration.delta":
                    self.first.setdefault(str(body.get("turn_id")), time.monotonic())

        await self._nc.subscribe(f"{LIVE_PREFIX}.>", cb=on_live)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()


class Player:
    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        cfg: LoadConfig,
        results: Results,
        live: LiveFirstDeltas,
        rng: random.Random,
    ) -> None:
        self.http, self.url, self.cfg = http, url, cfg
        self.results, self.live, self.rng = results, live, rng
        self.headers = {"Authorization": f"Bearer {mint_token(uuid.uuid4())}"}
        self.session_id = ""

    async def play(self, measure_from: float, stop_at: float) -> None:
        created = await self.http.post(f"{self.url}/api/sessions", json={}, headers=self.headers)
        if created.status_code != 201:
            self.results.errors[f"session: HTTP {created.status_code}"] += 1
            return
        self.session_id = created.json()["session_id"]
        while time.monotonic() < stop_at:
            sample = TurnSample(sent_at=time.monotonic())
            try:
                await self.turn(sample)
            except httpx.HTTPError as exc:
                self.results.errors[f"transport: {type(exc).__name__}"] += 1
            if sample.sent_at >= measure_from and sample.sent_at < stop_at:
                self.results.samples.append(sample)
            await asyncio.sleep(self.cfg.think_s * self.rng.uniform(0.5, 1.5))

    async def turn(self, sample: TurnSample) -> None:
        kind, text = self.rng.choice(INPUTS)
        body = {"session_id": self.session_id, "input_type": kind, "text": text}
        headers = self.headers | {
            "Accept": "text/event-stream",
            "Prefer": "respond-async",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        async with self.http.stream(
            "POST", f"{self.url}/api/story/progress", json=body, headers=headers
        ) as response:
            if response.status_code not in (200, 202):
                await response.aread()
                self.results.errors[f"progress: HTTP {response.status_code}"] += 1
                return
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                self.results.mode = "SSE"
                await self.follow_stream(response, sample)
                return
            await response.aread()
            turn_id = response.json()["turn_id"]
        self.results.mode = "202 + polling (first delta from the live channel)"
        await self.poll(turn_id, sample)

    async def follow_stream(self, response: httpx.Response, sample: TurnSample) -> None:
        async for event, data in sse_events(response):
            now = time.monotonic() - sample.sent_at
            if event == "narration.delta" and sample.first_delta_s is None:
                sample.first_delta_s = now
            elif event in ("narration.completed", "turn.completed"):
                sample.narrated_s, sample.outcome = now, "completed"
                return  # the player reads on; pictures arrive while it thinks
            elif event == "turn.failed":
                sample.outcome = "failed"
                code = json.loads(data).get("error_code") or json.loads(data).get("code")
                self.results.errors[f"turn.failed: {code}"] += 1
                return
        self.results.errors["stream ended before the narration"] += 1

    async def poll(self, turn_id: str, sample: TurnSample) -> None:
        deadline = time.monotonic() + self.cfg.grace_s
        while time.monotonic() < deadline:
            got = await self.http.get(f"{self.url}/api/turns/{turn_id}", headers=self.headers)
            if got.status_code == 200 and got.json()["status"] in ("completed", "failed"):
                sample.outcome = got.json()["status"]
                sample.narrated_s = time.monotonic() - sample.sent_at
                first = self.live.first.get(turn_id)
                if first is not None:
                    sample.first_delta_s = first - sample.sent_at
                if sample.outcome == "failed":
                    self.results.errors[f"turn.failed: {got.json().get('error')}"] += 1
                return
            if got.status_code not in (200, 404):
                self.results.errors[f"poll: HTTP {got.status_code}"] += 1
            await asyncio.sleep(0.1)
        self.results.errors["timeout"] += 1


# -- memory ----------------------------------------------------------------------------------
class PeakMemory:
    """Peak resident memory per process, sampled in a thread every `every_s`."""

    def __init__(self, processes: dict[str, list[psutil.Process]], every_s: float = 0.5):
        self.processes = processes
        self.peak: dict[str, int] = dict.fromkeys(processes, 0)
        self.cpu_s: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._cpu_start = self._cpu()

    def _cpu(self) -> dict[str, float]:
        totals = {}
        for name, procs in self.processes.items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            totals[name] = total
        return totals

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for name, procs in self.processes.items():
                used = 0
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        # PSS for Postgres (its processes share buffers), RSS for the rest.
                        if name == "postgres":
                            used += proc.memory_full_info().pss
                        else:
                            used += proc.memory_info().rss
                self.peak[name] = max(self.peak[name], used)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        end = self._cpu()
        self.cpu_s = {name: end[name] - self._cpu_start.get(name, 0.0) for name in end}


def stack_processes(stack: DevStack) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {"players (this process)": [psutil.Process()]}
    for name, child in stack.children.items():
        if child.proc is not None:
            found[name] = [psutil.Process(child.proc.pid)]
    if stack.nats is not None and stack.nats.proc is not None:
        found["nats-server"] = [psutil.Process(stack.nats.proc.pid)]
    if stack.postgres is not None and stack.postgres.proc is not None:
        master = psutil.Process(stack.postgres.proc.pid)
        found["postgres"] = [master, *master.children(recursive=True)]
    return found


class Backlogs:
    """Peak messages waiting (num_pending) and in hand (num_ack_pending) per consumer."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.peak: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            while True:
                for name in DURABLE_CONSUMERS:
                    with contextlib.suppress(Exception):
                        info = await js.consumer_info(STREAM_NAME, name)
                        waiting, held = self.peak.get(name, (0, 0))
                        self.peak[name] = (
                            max(waiting, info.num_pending or 0),
                            max(held, info.num_ack_pending or 0),
                        )
                await asyncio.sleep(1.0)
        finally:
            await nc.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- the run ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class ReadModel:
    """Where a turn's time went, from the read model (medians over the run, ms)."""

    images: tuple[int, int, int]  # completed, failed, still queued
    to_narrator_ms: float  # requested (API) -> narration.started (narrator took it)
    model_first_token_ms: float  # the narrator's call -> first token
    model_total_ms: float  # the narrator's call -> last token


async def read_model(stack: DevStack) -> ReadModel:
    import asyncpg

    conn = await asyncpg.connect(stack.database_url.replace("+asyncpg", ""))
    try:
        images = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'completed') AS done,"
            " count(*) FILTER (WHERE status = 'failed') AS failed,"
            " count(*) FILTER (WHERE status = 'pending') AS pending FROM images"
        )
        turns = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM"
            "   started_at - requested_at) * 1000) AS queued,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_first_token_ms) AS ttft,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS total"
            " FROM turns WHERE status = 'completed'"
        )
    finally:
        await conn.close()
    return ReadModel(
        (int(images["done"]), int(images["failed"]), int(images["pending"])),
        float(turns["queued"] or 0),
        float(turns["ttft"] or 0),
        float(turns["total"] or 0),
    )


async def run(cfg: LoadConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = DevConfig.ephemeral(
            Path(tmp),
            openai_token_delay_ms=cfg.token_ms,
            openai_first_token_delay_ms=cfg.ttft_ms,
            comfyui_render_ms=cfg.render_ms,
            api_replicas=cfg.api_replicas,
            extra_env=cfg.service_env(),
        )
        stack = DevStack(config, sink=LogSink(stream=None, file=Path(tmp) / "stack.log"))
        await asyncio.to_thread(stack.start, 120)
        try:
            await measure(stack, cfg)
        finally:
            await asyncio.to_thread(stack.stop)


async def measure(stack: DevStack, cfg: LoadConfig) -> None:
    results = Results()
    live = LiveFirstDeltas()
    await live.start(stack.nats_url)
    memory = PeakMemory(stack_processes(stack))
    memory.start()
    backlogs = Backlogs(stack.nats_url)
    backlogs.start()
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=2 * cfg.players, max_keepalive_connections=cfg.players)
    started = time.monotonic()
    measure_from = started + cfg.warmup_s
    stop_at = measure_from + cfg.duration_s
    async with httpx.AsyncClient(timeout=cfg.grace_s, limits=limits) as http:
        urls = stack.api_urls
        players = [
            Player(http, urls[i % len(urls)], cfg, results, live, random.Random(rng.random()))
            for i in range(cfg.players)
        ]

        async def staggered(i: int, player: Player) -> None:
            # Players arrive over the warm-up, not all in the same millisecond.
            await asyncio.sleep(cfg.warmup_s * 0.8 * i / max(1, cfg.players))
            await player.play(measure_from, stop_at)

        tasks = [asyncio.create_task(staggered(i, p)) for i, p in enumerate(players)]
        done, late = await asyncio.wait(tasks, timeout=cfg.warmup_s + cfg.duration_s + cfg.grace_s)
        for task in late:
            task.cancel()
        results.errors["players still playing after the grace period"] += len(late)
        for task in done:
            if task.exception() is not None:
                results.errors[f"player crashed: {task.exception()!r}"[:80]] += 1
    memory.stop()
    await backlogs.stop()
    await live.stop()
    report(cfg, results, memory, await read_model(stack), backlogs)


def report(
    cfg: LoadConfig, results: Results, memory: PeakMemory, model: ReadModel, backlogs: Backlogs
) -> None:
    samples = results.samples
    narrated = [s for s in samples if s.outcome == "completed" and s.narrated_s is not None]
    firsts = [s.first_delta_s * 1000 for s in narrated if s.first_delta_s is not None]
    completes = [s.narrated_s * 1000 for s in narrated if s.narrated_s is not None]
    errors = +results.errors
    print(
        f"load run: {cfg.players} players for {cfg.duration_s:.0f} s after a "
        f"{cfg.warmup_s:.0f} s warm-up, {cfg.api_replicas} API replicas, think ~{cfg.think_s} s; "
        f"OpenAI sandbox TTFT {cfg.ttft_ms} ms + {cfg.token_ms} ms/token, ComfyUI "
        f"{cfg.render_ms} ms/image (one at a time), images {cfg.image_policy}; {psutil.cpu_count()}"
        f" CPUs; turns followed by {results.mode}"
    )
    print(
        f"  turns narrated        {len(narrated)} of {len(samples)} sent in the window: "
        f"{len(narrated) / cfg.duration_s:.1f} turns/s"
    )
    if firsts:
        print(
            f"  time to first delta   p50 {statistics.median(firsts):.0f} ms, "
            f"p99 {percentile(firsts, 0.99):.0f} ms (n={len(firsts)})"
        )
    if completes:
        print(
            f"  time to narration     p50 {statistics.median(completes):.0f} ms, "
            f"p99 {percentile(completes, 0.99):.0f} ms"
        )
    print(
        f"  where it went (p50)   API -> narrator {model.to_narrator_ms:.0f} ms, model call: "
        f"first token {model.model_first_token_ms:.0f} ms, all {model.model_total_ms:.0f} ms"
    )
    print(
        "  consumers (peak)      "
        + ", ".join(
            f"{name} {waiting} waiting / {held} in hand"
            for name, (waiting, held) in backlogs.peak.items()
        )
    )
    done, failed, queued = model.images
    print(f"  images                {done} completed, {failed} failed, {queued} still queued")
    print(
        "  errors                "
        + (", ".join(f"{kind}: {n}" for kind, n in errors.most_common()) or "none")
    )
    print("  peak memory, CPU s    ", end="")
    print(
        ", ".join(
            f"{name} {memory.peak[name] / 2**20:.0f} MiB / {memory.cpu_s.get(name, 0):.0f} s"
            for name in sorted(memory.peak, key=lambda n: -memory.peak[n])
        )
    )


async def main() -> None:
    await run(LoadConfig.from_env())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int)
    parser.add_argument("--duration", type=float, help="measured seconds")
    args = parser.parse_args()
    load = LoadConfig.from_env()
    if args.players:
        load.players = args.players
    if args.duration:
        load.duration_s = args.duration
    asyncio.run(run(load))
