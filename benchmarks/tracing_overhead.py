"""What tracing costs: turns per second through the whole stack, tracing on vs off.

Two stacks run side by side as `taleforge dev` runs them (every service its own process,
embedded NATS and Postgres, zero-delay OpenAI sandbox, 20 ms ComfyUI renders): one exports
every span over OTLP/HTTP to the dev trace sink (as `make dev` does; in production the
collector takes its place), the other has the OpenTelemetry SDK off (OTEL_SDK_DISABLED).
They are measured in pairs of rounds back to back (which goes first alternates), so load
from elsewhere hits both alike; the figure is the median of the pairs' ratios. A round:
SESSIONS players at once, each playing TURNS turns one after another; a turn counts once
its narration and its picture are in Postgres.
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

SESSIONS = 6
TURNS = 4
ROUNDS = 8
POLL_S = 0.005


async def _play(stack: DevStack, db: asyncpg.Pool) -> None:
    """One player: a session, TURNS turns, each waited for (narration and picture)."""
    headers = {"Authorization": f"Bearer {mint_token(uuid.uuid4())}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as http:
        session_id = (await http.post("/api/sessions", json={})).json()["session_id"]
        for i in range(TURNS):
            while True:
                accepted = await http.post(
                    "/api/story/progress",
                    json={"session_id": session_id, "input_type": "action", "text": f"On ({i})"},
                    headers={"Prefer": "respond-async"},
                )
                if accepted.status_code != 409:  # the previous turn's lock not released yet
                    break
                await asyncio.sleep(POLL_S)
            accepted.raise_for_status()
            turn_id = uuid.UUID(accepted.json()["turn_id"])
            while not await db.fetchval(
                "SELECT t.status = 'completed' AND count(i.id) > 0"
                " AND bool_and(i.status <> 'pending')"
                " FROM turns t LEFT JOIN images i ON i.turn_id = t.id"
                " WHERE t.id = $1 GROUP BY t.status",
                turn_id,
            ):
                await asyncio.sleep(POLL_S)


async def _round(stack: DevStack, db: asyncpg.Pool) -> float:
    """Turns per second of one round."""
    started = time.perf_counter()
    await asyncio.gather(*(_play(stack, db) for _ in range(SESSIONS)))
    return SESSIONS * TURNS / (time.perf_counter() - started)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stacks: dict[str, DevStack] = {}
        for mode in ("on", "off"):
            data = Path(tmp) / mode
            data.mkdir()
            config = DevConfig.ephemeral(
                data, openai_token_delay_ms=0, comfyui_render_ms=20, tracing=mode == "on"
            )
            # Pictures with every beat: the trace reaches the illustrator each turn.
            config.extra_env["NARRATOR_IMAGE_POLICY"] = "every_turn"
            stacks[mode] = DevStack(config, sink=LogSink(stream=None, file=data / "stack.log"))
        pools: dict[str, asyncpg.Pool] = {}
        try:
            for mode, stack in stacks.items():
                await asyncio.to_thread(stack.start, 120)
                dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
                pools[mode] = await asyncpg.create_pool(dsn, min_size=1, max_size=SESSIONS)
            await asyncio.gather(*(_round(s, pools[m]) for m, s in stacks.items()))  # warm-up
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(ROUNDS):
                for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    rates[mode].append(await _round(stacks[mode], pools[mode]))
            spans = sum(1 for _ in stacks["on"].traces_path.open())
        finally:
            for pool in pools.values():
                await pool.close()
            for stack in stacks.values():
                await asyncio.to_thread(stack.stop)
    ratios = sorted(on / off for on, off in zip(rates["on"], rates["off"], strict=True))
    low, high = ratios[ROUNDS // 4], ratios[-ROUNDS // 4 - 1]
    print(
        f"turns/s through the whole stack, {SESSIONS} players x {TURNS} turns a round, "
        f"{ROUNDS} pairs of rounds: tracing on/off = {statistics.median(ratios):.3f} "
        f"(median of the pairs; middle half {low:.3f}..{high:.3f}); "
        f"median turns/s on {statistics.median(rates['on']):.2f}, "
        f"off {statistics.median(rates['off']):.2f}; {spans} spans exported"
    )
