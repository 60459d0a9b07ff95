"""Narrator: how much of each prompt is a stable prefix, and the narrator's own overhead.

1. Stable prefix: one 30-turn session with the default-sized scenario and a context budget
   small enough that old turns get folded into the summary along the way. For each turn
   after the first, the share of its prompt tokens that are exactly the previous prompt's
   start (instructions, then the input messages, in order) — what a provider's prefix
   cache can reuse. Also the sandbox's stand-in cache figure (cached/input tokens).
2. Overhead: 200 turns, 50 sessions at once (4 turns each, in order), concurrency 50.
   Per turn: (first delta published − message handed to the narrator), measured inside
   the narrator, minus the sandbox's own time to first token (request received → first
   delta sent, measured inside the sandbox). What remains is ours: state, settings,
   prompt building, the SDK, HTTP and the first live publish.

Embedded nats-server; the OpenAI sandbox in its own process with no delay per token;
the narrator in this process. Tokens are counted with the narrator's token counter.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats

from taleforge.cli.embedded import EmbeddedNats, free_port
from taleforge.contracts import InputType, SessionStarted, TurnRequested, parse_event
from taleforge.contracts.events import Character, ImagePolicy, ScenarioSnapshot
from taleforge.narrator.app import create_app
from taleforge.narrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream

PREFIX_TURNS = 30
SESSIONS = 50
TURNS_PER_SESSION = 4
ACTIONS = [
    "I light the lantern and step onto the ferry",
    "Who are you, and why do you wait here?",
    "I draw my knife and cut the mooring rope",
    "I search the ferryman's hut for his ledger",
    "Tell me about the Wardens",
]

SCENARIO = ScenarioSnapshot(
    world=(
        "Greywater Ford is a river crossing on the edge of the Fenmarch, a land of reed beds, "
        "drowned chapels and old toll roads. Folk fear the river spirits and the grey-cloaked "
        "Wardens who once kept the ford. Magic is rare, quiet and costly."
    ),
    tone="Melancholy folk horror with moments of warmth; slow-burning dread, never gore.",
    rules=["The river remembers every promise.", "Nobody crosses after dark without a lantern."],
    player_character=Character(name="Wren", description="A travelling tinker with a bad knee."),
    characters=[
        Character(name="The Grey Warden", description="Patient, courteous, not alive."),
        Character(name="Old Maddock", description="The missing ferryman; owes everyone money."),
    ],
    image_policy=ImagePolicy.NEVER,
)


def _tokens(body: dict[str, Any]) -> list[str]:
    """The prompt as the provider sees it, in order, cut into (approximate) tokens."""
    from taleforge.narrator.tokens import _PIECES

    parts = [body.get("instructions") or ""]
    parts += [f"<{m['role']}>{m['content']}" for m in body.get("input") or []]
    return _PIECES.findall("\n".join(parts))


def _shared_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Completions:
    """Waits for a turn's NarrationCompleted (core subscription on the stream subjects)."""

    def __init__(self) -> None:
        self.done: dict[uuid.UUID, Any] = {}
        self._waiters: dict[uuid.UUID, asyncio.Future[Any]] = {}

    async def on_msg(self, msg: Any) -> None:
        event = parse_event(msg.data)
        self.done[event.turn_id] = event
        waiter = self._waiters.pop(event.turn_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    async def wait(self, turn_id: uuid.UUID, timeout: float = 30) -> Any:
        if turn_id in self.done:
            return self.done[turn_id]
        future = asyncio.get_running_loop().create_future()
        self._waiters[turn_id] = future
        return await asyncio.wait_for(future, timeout)


async def _play(
    js: Any, completions: Completions, session: SessionStarted, turns: int, offset: int = 0
) -> None:
    await js.publish(session.subject(), session.to_bytes())
    for i in range(turns):
        turn = TurnRequested(
            session_id=session.session_id,
            user_id=session.user_id,
            turn_id=uuid.uuid4(),
            input_type=InputType.ACTION if i % 2 else InputType.SPEECH,
            text=ACTIONS[(i + offset) % len(ACTIONS)] + f" ({i})",
        )
        await js.publish(turn.subject(), turn.to_bytes())
        event = await completions.wait(turn.turn_id)
        assert event.type == "narration.completed", event


def _session() -> SessionStarted:
    return SessionStarted(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        scenario_id="bench",
        title="The Lantern at Greywater Ford",
        opening="Rain needles the river as dusk settles over Greywater Ford.",
        scenario=SCENARIO,
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats")
        server.start()
        port = free_port()
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "taleforge.sandboxes.openai", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sandbox_url = f"http://127.0.0.1:{port}"
        try:
            await _run(server.url, sandbox_url)
        finally:
            sandbox.terminate()
            sandbox.wait(10)
            server.stop()


async def _wait_for_sandbox(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                (await http.get(f"{url}/v1/models")).raise_for_status()
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    raise RuntimeError("the OpenAI sandbox did not start")


async def _run(nats_url: str, sandbox_url: str) -> None:
    await _wait_for_sandbox(sandbox_url)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    completions = Completions()
    await nc.subscribe("story.events.*.narration.completed", cb=completions.on_msg)
    first_delta: dict[uuid.UUID, tuple[float, float]] = {}

    def observe(turn_id: uuid.UUID, delivered: float, published: float) -> None:
        first_delta[turn_id] = (delivered, published)

    settings = Settings(
        nats_url=nats_url,
        openai_base_url=f"{sandbox_url}/v1",
        concurrency=SESSIONS,
        log_level="WARNING",
    )
    app = create_app(settings, observer=observe)
    await app.start()
    http = httpx.AsyncClient(base_url=sandbox_url, timeout=30)
    try:
        # 1. Stable prefix over one 30-turn session: at the default budget, then at a
        # small one (changed live through the settings bucket) where turns get folded.
        kv = await js.key_value(settings.settings_bucket)
        for budget in (settings.context_budget_tokens, 2500):
            await kv.put("context_budget_tokens", str(budget).encode())
            await http.delete("/_sandbox/requests")
            completions.done.clear()
            await _play(js, completions, _session(), PREFIX_TURNS)
            await _report_prefix(http, settings.model, budget, list(completions.done.values()))
        await kv.delete("context_budget_tokens")

        # 2. Overhead: one session alone (baseline), then 200 turns over 50 sessions at once.
        for label, sessions, turns in (
            ("1 session alone", 1, 20),
            (f"{SESSIONS} sessions at once", SESSIONS, TURNS_PER_SESSION),
        ):
            await http.delete("/_sandbox/requests")
            first_delta.clear()
            started = time.perf_counter()
            plays = [_play(js, completions, _session(), turns, offset=i) for i in range(sessions)]
            await asyncio.gather(*plays)
            elapsed = time.perf_counter() - started
            await _report_overhead(http, label, first_delta, elapsed)
    finally:
        await http.aclose()
        await app.stop()
        await nc.close()


async def _report_prefix(http: httpx.AsyncClient, model: str, budget: int, done: list[Any]) -> None:
    requests = (await http.get("/_sandbox/requests")).json()
    bodies = [r["body"] for r in requests if r["body"].get("model") == model]
    folds = len(requests) - len(bodies)
    prompts = [_tokens(b) for b in bodies]
    pairs = list(zip(prompts, prompts[1:], strict=False))
    shares = [_shared_prefix(a, b) / len(b) for a, b in pairs]
    shared = sum(_shared_prefix(a, b) for a, b in pairs)
    total = sum(len(b) for _, b in pairs)
    cached = sum(e.usage.cached_tokens for e in done) / max(
        1, sum(e.usage.input_tokens for e in done)
    )
    cost = sum(e.cost_usd or 0 for e in done)
    print(
        f"stable prefix over {PREFIX_TURNS} turns, budget {budget} tokens, {folds} summary folds:"
    )
    print(f"  prefix share, token-weighted      {shared / total:.3f}   (target >= 0.9)")
    print(
        f"  prefix share per turn             median {statistics.median(shares):.3f}, "
        f"min {min(shares):.3f}"
    )
    print(f"  sandbox cached/input tokens       {cached:.3f}")
    print(f"  last prompt {len(prompts[-1])} tokens; the session cost ${cost:.5f} at list prices")


async def _report_overhead(
    http: httpx.AsyncClient,
    label: str,
    first_delta: dict[uuid.UUID, tuple[float, float]],
    elapsed: float,
) -> None:
    requests = (await http.get("/_sandbox/requests")).json()
    sandbox_ttft = {
        uuid.UUID(r["body"]["metadata"]["turn_id"]): (r["first_delta_at"] - r["time"]) * 1000
        for r in requests
        if "first_delta_at" in r and "turn_id" in (r["body"].get("metadata") or {})
    }
    overhead = [
        (published - delivered) * 1000 - sandbox_ttft[turn_id]
        for turn_id, (delivered, published) in first_delta.items()
        if turn_id in sandbox_ttft
    ]
    raw = [(p - d) * 1000 for d, p in first_delta.values()]
    ttft = list(sandbox_ttft.values())
    print(f"overhead over {len(overhead)} turns, {label} ({elapsed:.1f} s):")
    print(
        f"  delivery -> first delta published  median {statistics.median(raw):.1f} ms, "
        f"p99 {_percentile(raw, 0.99):.1f} ms"
    )
    print(f"  sandbox time to first token        median {statistics.median(ttft):.1f} ms")
    print(
        f"  narrator overhead (difference)     median {statistics.median(overhead):.1f} ms, "
        f"p99 {_percentile(overhead, 0.99):.1f} ms"
    )
