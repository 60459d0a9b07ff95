"""Time from POST /api/story/progress to the turn's NarrationCompleted projected in Postgres.

Whole stack as separate processes on embedded NATS/Postgres, OpenAI sandbox with zero delay
per token: what is measured is our own path (HTTP, JetStream, narrator, SDK streaming,
persistence), not a model's speed. Turns are played one after another in one session.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from taleforge.cli.dev import DevConfig, DevStack
from taleforge.cli.processes import LogSink
from taleforge.cli.tokens import mint_token

TURNS = 20
WARMUP = 3
POLL_S = 0.002


async def _measure(stack: DevStack, turns: int) -> list[float]:
    token = mint_token(uuid.uuid4())
    db = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    headers = {"Authorization": f"Bearer {token}"}
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as http:
        session_id = (await http.post("/api/sessions", json={})).json()["session_id"]
        for i in range(WARMUP + turns):
            started = time.perf_counter()
            accepted = await http.post(
                "/api/story/progress",
                json={"session_id": session_id, "input_type": "action", "text": f"I walk on ({i})"},
            )
            turn_id = uuid.UUID(accepted.json()["turn_id"])
            while True:
                status = await db.fetchval("SELECT status FROM turns WHERE id = $1", turn_id)
                if status in ("completed", "failed"):
                    break
                # A short pause: a tight loop would steal the CPU from the services measured.
                await asyncio.sleep(POLL_S)
            elapsed = time.perf_counter() - started
            if status != "completed":
                raise RuntimeError(f"turn {turn_id} failed")
            if i >= WARMUP:
                samples.append(elapsed * 1000)
            # Let the turn's image finish (its row may not exist yet), so renders don't overlap
            # the next measurement.
            while not await db.fetchval(
                "SELECT count(*) > 0 AND bool_and(status <> 'pending') FROM images"
                " WHERE turn_id = $1",
                turn_id,
            ):
                await asyncio.sleep(POLL_S)
    await db.close()
    return samples


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = DevConfig.ephemeral(Path(tmp), openai_token_delay_ms=0, comfyui_render_ms=20)
        stack = DevStack(config, sink=LogSink(stream=None, file=Path(tmp) / "stack.log"))
        # DevStack is synchronous (it runs its own event loop to wait for consumers).
        await asyncio.to_thread(stack.start, 90)
        try:
            samples = await _measure(stack, TURNS)
        finally:
            await asyncio.to_thread(stack.stop)
    samples.sort()
    p90 = samples[int(0.9 * (len(samples) - 1))]
    print(
        f"turn POST -> narration.completed in Postgres, zero-delay sandbox, n={len(samples)}: "
        f"median {statistics.median(samples):.1f} ms, p90 {p90:.1f} ms, "
        f"min {samples[0]:.1f} ms, max {samples[-1]:.1f} ms"
    )
