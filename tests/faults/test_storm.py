"""The storm: players play while every part of the stack is broken in turn, at random
moments; then every turn the API accepted is accounted for.

Seeded: the seed is printed with the table; `TALEFORGE_FAULTS_SEED=<seed>` replays the same
order of faults, moments and inputs (the machine's timing still varies).
Size: `TALEFORGE_FAULTS_PLAYERS` (default 12) and `TALEFORGE_FAULTS_TURNS` (default 300, the
fewest turns the storm plays).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import pytest

from taleforge.cli.dev import DevStack

from .audit import Report, audit, settle
from .conftest import storm_seed
from .faults import FAULTS, POISON_PHRASE, FaultRecord, Storm
from .players import Player, Replicas, Traffic
from .watch import BusWatcher

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PLAYERS = int(os.environ.get("TALEFORGE_FAULTS_PLAYERS", "12"))
MIN_TURNS = int(os.environ.get("TALEFORGE_FAULTS_TURNS", "300"))
POISON_INPUTS = 3  # turns whose input the provider refuses for good
TURN_TIMEOUT_S = 180.0


async def run_faults(storm: Storm, order: list[int]) -> list[FaultRecord]:
    records = []
    for index in order:
        await asyncio.sleep(storm.rng.uniform(0.5, 3.0))  # a random moment, turns flowing
        storm.say(f"{FAULTS[index].__name__} ({len(storm.traffic.accepted)} turns so far)")
        record = await FAULTS[index](storm)
        storm.say(f"  {record.line()}")
        records.append(record)
    return records


async def test_no_turn_is_lost_or_doubled_through_the_storm(
    storm_stack: DevStack, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = storm_seed()
    rng = random.Random(seed)
    traffic = Traffic()
    watcher = BusWatcher()
    await watcher.start(storm_stack.nats_url)
    storm = Storm(storm_stack, traffic, watcher, random.Random(rng.getrandbits(64)))

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"[{storm.now_s():6.1f}s] {line}", flush=True)

    storm.say = say
    say(f"storm seed {seed}: {PLAYERS} players, at least {MIN_TURNS} turns")
    await storm.openai_faults()  # the poison phrase is refused from the start

    poisoned = rng.sample(range(PLAYERS), POISON_INPUTS)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=4 * PLAYERS, max_keepalive_connections=2 * PLAYERS)
    # Reads time out well after the streams' 2 s heartbeats: a silent stream is a dead one.
    timeout = httpx.Timeout(30, read=10)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        replicas = Replicas(storm_stack.api_urls)
        players = [
            Player(
                i,
                http,
                replicas,
                traffic,
                random.Random(rng.getrandbits(64)),
                poison_phrase=POISON_PHRASE,
                poison_turns={rng.randrange(2, 12)} if i in poisoned else set(),
                turn_timeout_s=TURN_TIMEOUT_S,
            )
            for i in range(PLAYERS)
        ]
        playing = [asyncio.create_task(p.play(stop)) for p in players]
        order = list(range(len(FAULTS)))
        rng.shuffle(order)
        started = time.monotonic()
        try:
            records = await run_faults(storm, order)
            while len(traffic.accepted) < MIN_TURNS and not all(t.done() for t in playing):
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.wait(playing, timeout=TURN_TIMEOUT_S + 30)
            for task in playing:
                task.cancel()
        for task in playing:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    report = Report(seed=seed, duration_s=time.monotonic() - started, faults=records)
    report.settle_s = await settle(storm_stack)
    await watcher.stop()
    await audit(
        storm_stack,
        traffic,
        report,
        poison_seqs=storm.poison_seqs,
        poison_phrase=POISON_PHRASE,
    )
    with capsys.disabled():
        print("\n" + report.table())
    assert len(traffic.accepted) >= MIN_TURNS
    assert not report.problems, "\n".join(report.problems)
