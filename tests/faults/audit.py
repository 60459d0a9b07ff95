"""After the storm: count what survived, from the stream, the read model and the consumers.

The stream is read whole (an ephemeral consumer, no acks), so the audit sees every event
that was ever stored, including the poison. Problems are collected as sentences; the test
fails listing them all, after printing the table.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from taleforge.cli.dev import DURABLE_CONSUMERS, DevStack
from taleforge.contracts import (
    STREAM_NAME,
    STREAM_SUBJECTS,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    InvalidEvent,
    NarrationCompleted,
    TurnFailed,
    TurnRequested,
    parse_event,
)

from ..support import asyncpg_dsn
from .faults import FaultRecord
from .players import Traffic

# Which stream messages each durable consumer is given (its filter), by event type.
CONSUMER_TYPES = {
    "narrator": ("session.started", "turn.requested"),
    "illustrator": ("image.requested",),
    "persistence": None,  # everything
}


@dataclass
class ConsumerState:
    num_pending: int
    num_ack_pending: int
    deliveries: int  # every delivery, redeliveries included (the consumer sequence)


async def consumer_states(nats_url: str) -> dict[str, ConsumerState]:
    nc = await nats.connect(nats_url, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        states = {}
        for name in DURABLE_CONSUMERS:
            info = await js.consumer_info(STREAM_NAME, name)
            states[name] = ConsumerState(
                num_pending=int(info.num_pending or 0),
                num_ack_pending=int(info.num_ack_pending or 0),
                deliveries=int(info.delivered.consumer_seq or 0) if info.delivered else 0,
            )
        return states
    finally:
        await nc.close()


async def settle(stack: DevStack, timeout_s: float = 300.0) -> float:
    """Wait until every consumer has nothing pending and nothing unacknowledged, twice in a
    row a second apart; returns how long that took."""
    started = time.monotonic()
    calm = 0
    while calm < 2:
        if time.monotonic() - started > timeout_s:
            states = await consumer_states(stack.nats_url)
            raise AssertionError(f"consumers did not settle in {timeout_s:.0f}s: {states}")
        try:
            states = await consumer_states(stack.nats_url)
        except (OSError, nats.errors.Error, TimeoutError):
            calm = 0
        else:
            idle = all(s.num_pending == 0 and s.num_ack_pending == 0 for s in states.values())
            calm = calm + 1 if idle else 0
        await asyncio.sleep(1.0)
    return time.monotonic() - started


@dataclass
class StoredMessage:
    seq: int
    subject: str
    event: Any | None  # the parsed event, or None when it is not a valid event
    invalid: str | None = None


async def read_stream(nats_url: str) -> list[StoredMessage]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM_NAME)).state.last_seq
        sub = await js.pull_subscribe(
            STREAM_SUBJECTS[0],
            stream=STREAM_NAME,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=60.0,
            ),
        )
        stored: list[StoredMessage] = []
        while not stored or stored[-1].seq < last:
            for msg in await sub.fetch(500, timeout=10):
                seq = msg.metadata.sequence.stream
                try:
                    stored.append(StoredMessage(seq, msg.subject, parse_event(msg.data)))
                except InvalidEvent as exc:
                    stored.append(StoredMessage(seq, msg.subject, None, exc.reason))
        await sub.unsubscribe()
        return stored
    finally:
        await nc.close()


@dataclass
class Report:
    seed: int
    duration_s: float
    faults: list[FaultRecord]
    accepted: int = 0
    requested: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    images_requested: int = 0
    images_completed: int = 0
    images_failed: Counter[str] = field(default_factory=Counter)
    redeliveries: dict[str, int] = field(default_factory=dict)
    dead_letters: list[tuple[int, str]] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    resumes: int = 0
    delta_gaps: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    settle_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"

        failed = sum(self.failed.values())
        lines = [
            f"fault suite: seed {self.seed} (reproduce: TALEFORGE_FAULTS_SEED={self.seed}), "
            f"{self.duration_s:.0f} s",
            f"  turns accepted           {self.accepted:>6}   (turn.requested on the stream: "
            f"{self.requested})",
            f"  completed                {self.completed:>6}",
            f"  failed                   {failed:>6}   {counts(self.failed)}",
            f"  lost                     {len(self.lost):>6}",
            f"  duplicated               {len(self.duplicated):>6}",
            f"  images requested         {self.images_requested:>6}   completed "
            f"{self.images_completed}, failed {sum(self.images_failed.values())} "
            f"({counts(self.images_failed)})",
            "  redeliveries             "
            + ", ".join(f"{k} {v}" for k, v in self.redeliveries.items()),
            f"  dead letters             {len(self.dead_letters):>6}   "
            + "; ".join(f"seq {seq}: {reason[:60]}" for seq, reason in self.dead_letters),
            f"  player retries           {sum(self.retries.values()):>6}   {counts(self.retries)}",
            f"  streams resumed          {self.resumes:>6}   (Last-Event-ID; turns whose live "
            f"deltas had gaps: {self.delta_gaps})",
            f"  restarts (deliberate)    {counts(self.restarts)}; no other exits",
            f"  settled after the storm  {self.settle_s:.1f} s",
            "",
            f"  {'fault':<44} {'at':>7} {'down':>7} {'recovered':>13}  in flight",
        ]
        lines += [f"  {f.line()}" for f in self.faults]
        if self.problems:
            lines += ["", "PROBLEMS:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


async def audit(
    stack: DevStack,
    traffic: Traffic,
    report: Report,
    *,
    poison_seqs: dict[int, str],
    poison_phrase: str,
) -> Report:
    problems = report.problems
    stored = await read_stream(stack.nats_url)
    report.accepted = len({t.turn_id for t in traffic.accepted})
    report.retries = traffic.retries
    report.resumes = sum(t.resumes for t in traffic.accepted)
    report.restarts = stack.restarts

    # -- the stream ------------------------------------------------------------------------
    requests: dict[str, TurnRequested] = {}
    outcomes: dict[str, list[NarrationCompleted | TurnFailed]] = defaultdict(list)
    images: dict[str, ImageRequested] = {}
    image_outcomes: dict[str, list[ImageCompleted | ImageFailed]] = defaultdict(list)
    per_type: Counter[str] = Counter()
    for message in stored:
        event = message.event
        if event is None:
            if message.seq not in poison_seqs:
                problems.append(f"seq {message.seq} is not a valid event: {message.invalid}")
            per_type[message.subject.split(".", 3)[-1]] += 1
            continue
        per_type[event.type] += 1
        if isinstance(event, TurnRequested):
            requests[str(event.turn_id)] = event
        elif isinstance(event, NarrationCompleted | TurnFailed):
            outcomes[str(event.turn_id)].append(event)
        elif isinstance(event, ImageRequested):
            images[str(event.image_id)] = event
        elif isinstance(event, ImageCompleted | ImageFailed):
            image_outcomes[str(event.image_id)].append(event)
    report.requested = len(requests)
    for turn in traffic.accepted:
        if turn.turn_id not in requests:
            problems.append(f"turn {turn.turn_id} was accepted (202) but is not on the stream")
    for turn_id in requests:
        found = outcomes.get(turn_id, [])
        if not found:
            report.lost.append(turn_id)
        elif len(found) > 1:
            report.duplicated.append(turn_id)
        else:
            outcome = found[0]
            if isinstance(outcome, NarrationCompleted):
                report.completed += 1
            else:
                report.failed[outcome.code] += 1
    if report.lost:
        problems.append(f"{len(report.lost)} turn(s) without an outcome: {report.lost[:5]}")
    if report.duplicated:
        problems.append(f"{len(report.duplicated)} turn(s) with 2+ outcomes: {report.duplicated}")
    report.images_requested = len(images)
    for image_id in images:
        found_images = image_outcomes.get(image_id, [])
        if len(found_images) != 1:
            problems.append(f"image {image_id} has {len(found_images)} outcomes (want 1)")
        elif isinstance(found_images[0], ImageCompleted):
            report.images_completed += 1
        else:
            report.images_failed[found_images[0].code] += 1
    for turn in traffic.accepted:
        if poison_phrase not in turn.text:
            continue
        codes = [getattr(e, "code", e.type) for e in outcomes.get(turn.turn_id, [])]
        if codes != ["provider_rejected"]:
            problems.append(f"poisoned turn {turn.turn_id} ended {codes}, not provider_rejected")

    # -- the read model --------------------------------------------------------------------
    conn = await asyncpg.connect(asyncpg_dsn(stack.database_url))
    try:
        rows = {
            str(r["id"]): r
            for r in await conn.fetch("SELECT id, status, narration, error_code FROM turns")
        }
        image_rows = {str(r["id"]): r["status"] for r in await conn.fetch("SELECT * FROM images")}
        report.dead_letters = [
            (int(r["stream_seq"]), str(r["reason"]))
            for r in await conn.fetch("SELECT stream_seq, reason FROM dead_letters ORDER BY 1")
        ]
        users = list({uuid.UUID(str(e.user_id)) for e in requests.values()})
        charged = await conn.fetchval(
            "SELECT coalesce(sum(completed_turns), 0) FROM usage_ledger WHERE user_id = ANY($1)",
            users,
        )
    finally:
        await conn.close()
    for turn_id, found in outcomes.items():
        if len(found) != 1:
            continue
        row, outcome = rows.get(turn_id), found[0]
        want = "completed" if isinstance(outcome, NarrationCompleted) else "failed"
        if row is None:
            problems.append(f"turn {turn_id} ({want} on the stream) has no row")
        elif row["status"] != want:
            problems.append(f"turn {turn_id} is {want} on the stream, {row['status']} in its row")
        elif isinstance(outcome, NarrationCompleted) and row["narration"] != outcome.text:
            problems.append(f"turn {turn_id}: its row's narration differs from the stream's")
    # -- what the players saw ----------------------------------------------------------------
    for turn in traffic.accepted:
        found = outcomes.get(turn.turn_id, [])
        if turn.outcome is None or len(found) != 1:
            continue  # lost or duplicated: reported above
        seen = f"turn {turn.turn_id}: the player"
        want = "completed" if isinstance(found[0], NarrationCompleted) else "failed"
        if turn.outcome != want:
            problems.append(f"{seen} saw it {turn.outcome}, the stream has it {want}")
        if turn.finals_seen != 1:
            problems.append(f"{seen} got {turn.finals_seen} final events")
        if turn.repeated_ids:
            problems.append(f"{seen} got {turn.repeated_ids} events twice after resuming")
        if isinstance(found[0], NarrationCompleted):
            text = found[0].text
            if turn.completions_seen != 1:
                problems.append(f"{seen} was sent the narration {turn.completions_seen} times")
            if turn.narration != text:
                problems.append(f"{seen} read another narration than the stream's")
            if len(turn.deltas) > len(text) or text in turn.deltas[len(text) :]:
                problems.append(f"{seen} was streamed more than the narration: {turn.deltas!r}")
            elif turn.deltas != text:
                report.delta_gaps += 1  # live deltas lost (a NATS restart): not kept, by design
    if charged != report.completed:
        problems.append(
            f"usage ledger counts {charged} completed turns, the stream {report.completed}"
        )
    for image_id, found_images in image_outcomes.items():
        want = "completed" if isinstance(found_images[0], ImageCompleted) else "failed"
        if image_rows.get(image_id) != want:
            problems.append(f"image {image_id} is {want} on the stream, {image_rows.get(image_id)}")
    dead_seqs = {seq for seq, _ in report.dead_letters}
    for seq, what in poison_seqs.items():
        if seq not in dead_seqs:
            problems.append(f"poison {what} (seq {seq}) is not in dead_letters")
    for seq, reason in report.dead_letters:
        if seq not in poison_seqs:
            problems.append(f"unexpected dead letter seq {seq}: {reason}")

    # -- consumers and processes -----------------------------------------------------------
    states = await consumer_states(stack.nats_url)
    for name, state in states.items():
        if state.num_pending or state.num_ack_pending:
            problems.append(f"consumer {name}: {state}")
        wanted = CONSUMER_TYPES[name]
        matched = len(stored) if wanted is None else sum(per_type[t] for t in wanted)
        report.redeliveries[name] = state.deliveries - matched
    for name, child in stack.children.items():
        # Nothing restarts a process but the suite itself: one that exited stays down.
        if not child.running:
            problems.append(f"{name} is not running (exit code {child.proc and child.proc.poll()})")
    if traffic.stuck:
        problems.append(f"players gave up waiting on {len(traffic.stuck)} turn(s)")
    for fault in report.faults:
        if fault.recovered_s is None:
            problems.append(f"the stack did not recover from: {fault.name}")
    return report
