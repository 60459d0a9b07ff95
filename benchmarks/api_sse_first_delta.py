"""API: time from `POST /api/story/progress` (SSE) to the first `narration.delta` event the
client reads, minus the OpenAI sandbox's own time to first token for that turn.

The whole stack runs as in `make dev` (DevStack: NATS, Postgres, both sandboxes, all four
services), the sandbox with no delay per token. Each player has one session; at 1, 50 and
200 sessions at once every player POSTs a turn with `Accept: text/event-stream` and reads
the stream to its end. Per turn: (first delta read by the client − POST sent), measured
here, minus (first delta sent − request received), measured inside the sandbox. What
remains is ours: auth, limits and lock, the TurnRequested publish, the narrator's pick-up,
prompt and call, the live publish, the LIVE stream and the API's consumer, SSE framing and
the HTTP response — on one machine shared with everything else.

The narrator's concurrency is raised to 256 (default 16), so that at 200 sessions turns do
not queue for a narrator slot: the figure is the pipeline's overhead, not that setting.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from taleforge.cli.dev import DevConfig, DevStack
from taleforge.cli.processes import LogSink
from taleforge.cli.tokens import mint_token

# (sessions at once, rounds): more rounds where one round gives few samples.
LEVELS = ((1, 30), (50, 2), (200, 1))
WARMUP_TURNS = 3


@dataclass
class Sample:
    turn_id: uuid.UUID
    to_first_delta_ms: float
    to_accepted_ms: float  # POST -> turn.accepted read (the API's own part of the way)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Player:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {mint_token(uuid.uuid4())}"}
        self.session_id = ""

    async def start(self) -> None:
        created = await self.http.post("/api/sessions", json={}, headers=self.headers)
        created.raise_for_status()
        self.session_id = created.json()["session_id"]

    async def turn(self, n: int) -> Sample:
        body = {"session_id": self.session_id, "input_type": "action", "text": f"I walk on ({n})"}
        headers = {**self.headers, "Accept": "text/event-stream"}
        turn_id: uuid.UUID | None = None
        first: float | None = None
        accepted = 0.0
        started = time.perf_counter()
        async with self.http.stream(
            "POST", "/api/story/progress", json=body, headers=headers
        ) as response:
            response.raise_for_status()
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    if event == "turn.accepted":
                        turn_id = uuid.UUID(json.loads(line.removeprefix("data: "))["turn_id"])
                        accepted = time.perf_counter()
                    elif event == "narration.delta" and first is None:
                        first = time.perf_counter()
                    elif event == "turn.failed":
                        raise RuntimeError(f"turn failed: {line}")
        if turn_id is None or first is None:
            raise RuntimeError("the stream had no turn.accepted or no narration.delta")
        return Sample(turn_id, (first - started) * 1000, (accepted - started) * 1000)


async def _sandbox_ttft(sandbox: httpx.AsyncClient) -> dict[uuid.UUID, float]:
    requests = (await sandbox.get("/_sandbox/requests")).json()
    return {
        uuid.UUID(r["body"]["metadata"]["turn_id"]): (r["first_delta_at"] - r["time"]) * 1000
        for r in requests
        if "first_delta_at" in r and "turn_id" in (r["body"].get("metadata") or {})
    }


async def _level(
    http: httpx.AsyncClient, sandbox: httpx.AsyncClient, sessions: int, rounds: int
) -> None:
    players = [Player(http) for _ in range(sessions)]
    for batch in range(0, sessions, 25):
        await asyncio.gather(*(p.start() for p in players[batch : batch + 25]))
    samples: list[Sample] = []
    started = time.perf_counter()
    for round_no in range(rounds):
        await sandbox.delete("/_sandbox/requests")
        got = await asyncio.gather(*(p.turn(round_no) for p in players))
        ttft = await _sandbox_ttft(sandbox)
        samples += [s for s in got if s.turn_id in ttft]
        # Keep the sandbox's figure next to ours for this round's turns.
        for s in got:
            s.to_first_delta_ms -= ttft.get(s.turn_id, float("nan"))
    elapsed = time.perf_counter() - started
    overhead = [s.to_first_delta_ms for s in samples]
    accepted = [s.to_accepted_ms for s in samples]
    print(
        f"  {sessions:>3} sessions at once, {len(overhead)} turns ({elapsed:.1f} s): "
        f"median {statistics.median(overhead):.1f} ms, p99 {_percentile(overhead, 0.99):.1f} ms"
        f"   (of which POST -> turn.accepted: median {statistics.median(accepted):.1f} ms, "
        f"p99 {_percentile(accepted, 0.99):.1f} ms)"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = DevConfig.ephemeral(
            Path(tmp),
            openai_token_delay_ms=0,
            comfyui_render_ms=20,
            extra_env={"NARRATOR_CONCURRENCY": "256", "API_RATE_LIMIT_PER_MIN": "0"},
        )
        stack = DevStack(config, sink=LogSink(stream=None, file=Path(tmp) / "stack.log"))
        await asyncio.to_thread(stack.start, 120)
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        try:
            async with (
                httpx.AsyncClient(base_url=stack.api_url, timeout=120, limits=limits) as http,
                httpx.AsyncClient(
                    base_url=stack.openai_base_url.removesuffix("/v1"), timeout=30
                ) as sandbox,
            ):
                warm = Player(http)
                await warm.start()
                for n in range(WARMUP_TURNS):
                    await warm.turn(n)
                print(
                    "POST /api/story/progress (SSE) -> first narration.delta read, "
                    "minus the sandbox's time to first token:"
                )
                for sessions, rounds in LEVELS:
                    await _level(http, sandbox, sessions, rounds)
        finally:
            await asyncio.to_thread(stack.stop)
