"""`taleforge events`: a timeline of the event log — one session, one turn, or a time window.

Each line: stream seq, time stored, gap since the previous event, type, turn (#N = the session's
Nth turn request, when the session is read from its start), and the type's key fields.
`--json` writes one JSON object per line instead (the event plus seq, subject, stored_at,
gap_s). `--follow` keeps tailing new events until Ctrl-C.

Exit codes: 0 shown; 1 not found or unreachable; 3 (partly) aged out of the stream: what is
still there is shown and stderr says what is missing and which retention limit removed it.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from taleforge.cli.progress import Progress, run_until_interrupted
from taleforge.cli.stream import (
    AgedOut,
    NotInStream,
    Reader,
    Retention,
    StreamEvent,
    StreamUnavailable,
    check_session_complete,
    connect,
    find_turn_session,
    iso,
    parse,
    retention,
)
from taleforge.contracts import STREAM_SUBJECTS, events_filter
from taleforge.contracts.envelope import Envelope

EXIT_OK, EXIT_NOT_FOUND, EXIT_AGED_OUT = 0, 1, 3
TEXT_CLIP = 60
_ENVELOPE_FIELDS = set(Envelope.model_fields)


@dataclass(frozen=True)
class Selection:
    session: uuid.UUID | None = None
    turn: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    follow: bool = False


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive means UTC), or an age like 90s, 15m, 2h, 3d (that long ago)."""
    now = now or datetime.now(UTC)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def clip(text: str, limit: int = TEXT_CLIP) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cost(value: float | None) -> str:
    return "$?" if value is None else f"${value:.6f}"


def _usage(usage: Any) -> str:
    cached = f" (cached {usage.cached_tokens})" if usage.cached_tokens else ""
    return f"in {usage.input_tokens}{cached} out {usage.output_tokens}"


def key_fields(event: Any) -> str:
    """The few fields of an event that a person reading a timeline wants."""
    kind = event.type
    if kind == "session.started":
        return f'"{clip(event.title)}" scenario {event.scenario_id}'
    if kind == "turn.requested":
        return f'{event.input_type.value}: "{clip(event.text)}"'
    if kind == "narration.started":
        return f"{event.model} attempt {event.attempt}"
    if kind == "narration.completed":
        took = f" {event.duration_ms / 1000:.2f}s" if event.duration_ms is not None else ""
        prompt = f" prompt {event.prompt.sha256[:10]}" if event.prompt is not None else ""
        return (
            f"{event.model} {_usage(event.usage)} {_cost(event.cost_usd)}{took}{prompt}: "
            f'"{clip(event.text, 40)}"'
        )
    if kind == "memory.folded":
        return (
            f"summary now covers turns 1..{event.summarized_through} (+{event.folded_turns}), "
            f"{len(event.summary)} chars; {event.model} {_usage(event.usage)} "
            f"{_cost(event.cost_usd)}"
        )
    if kind in ("turn.failed", "image.failed"):
        return f"{event.code}: {clip(event.reason)}"
    if kind == "delivery.exhausted":
        seq, deliveries = event.request_seq, event.deliveries
        return f"{event.consumer} gave up on {event.request_type} #{seq} ({deliveries}x)"
    if kind == "image.requested":
        return f'{event.kind.value} {str(event.image_id)[:8]}: "{clip(event.prompt, 40)}"'
    if kind == "image.completed":
        return f"{str(event.image_id)[:8]} {event.width}x{event.height} {event.size_bytes} B"
    extra = event.model_dump(mode="json", exclude=_ENVELOPE_FIELDS)
    return clip(" ".join(f"{k}={v}" for k, v in extra.items()), 100)


@dataclass
class Timeline:
    """Writes events as they come, with gaps and the session's turn numbers."""

    out: TextIO
    as_json: bool
    numbered: bool  # read from the session's start: turn.requested #N is known
    keep: Callable[[StreamEvent], bool] = lambda row: True
    shown: int = 0
    _previous: datetime | None = None
    _numbers: dict[uuid.UUID, int] = field(default_factory=dict)

    def when(self, row: StreamEvent) -> datetime:
        # The stream's clock: one clock, in stream order (producers' occurred_at can disagree,
        # e.g. an image planned before the narration event that precedes it is built).
        return row.stored_at

    def number(self, row: StreamEvent) -> int | None:
        event = row.event
        if event is None or event.turn_id is None or not self.numbered:
            return None
        if event.type == "turn.requested" and event.turn_id not in self._numbers:
            self._numbers[event.turn_id] = len(self._numbers) + 1
        return self._numbers.get(event.turn_id)

    def write(self, row: StreamEvent) -> None:
        number = self.number(row)
        if not self.keep(row):
            return
        if self.shown == 0:
            self.header()
        at = self.when(row)
        gap = None if self._previous is None else (at - self._previous).total_seconds()
        self._previous = at
        self.shown += 1
        if self.as_json:
            data = row.to_json()
            data["gap_s"] = None if gap is None else round(gap, 6)
            if number is not None:
                data["turn_number"] = number
            self.out.write(json.dumps(data, ensure_ascii=False) + "\n")
            return
        gap_text = "" if gap is None else f"+{gap:.3f}s"
        turn = ""
        if row.event is not None and row.event.turn_id is not None:
            turn = (f"#{number} " if number else "") + str(row.event.turn_id)[:8]
        details = key_fields(row.event) if row.event is not None else f"error: {row.error}"
        self.out.write(
            f"{row.seq:>8}  {iso(at)}  {gap_text:>10}  {row.type:<20} {turn:<13} {details}\n"
        )

    def header(self) -> None:
        if not self.as_json:
            self.out.write(
                f"{'seq':>8}  {'time (UTC)':<24}  {'gap':>10}  {'type':<20} {'turn':<13} fields\n"
            )


def warn(message: str) -> None:
    print(f"taleforge events: {message}", file=sys.stderr, flush=True)


async def show(nats_url: str, selection: Selection, *, as_json: bool, out: TextIO) -> int:
    """Print the selected timeline; the exit code (see the module docstring)."""
    async with connect(nats_url) as (_nc, js):
        kept = await retention(js)
        session = selection.session
        if selection.turn is not None and session is None:
            session = await find_turn_session(js, selection.turn)
            if session is None:
                return _turn_missing(selection.turn, kept)
        if session is not None:
            subject, start = events_filter(session), selection.since
        elif selection.since is not None:
            subject, start = STREAM_SUBJECTS[0], selection.since
        elif selection.follow:
            subject, start = STREAM_SUBJECTS[0], None
        else:
            warn("say what to show: --session, --turn, --since/--until, or --follow")
            return 2
        status = EXIT_OK
        if start is not None and _before_oldest(start, kept):
            if selection.until is not None and _before_oldest(selection.until, kept):
                warn(f"the whole window aged out of the stream: {kept.explain()}")
                return EXIT_AGED_OUT
            warn(f"events before {iso(start)} may have aged out: {kept.explain()}")
            status = EXIT_AGED_OUT

        def keep(row: StreamEvent) -> bool:
            if selection.turn is not None:
                return row.event is not None and row.event.turn_id == selection.turn
            return True

        timeline = Timeline(out, as_json, numbered=session is not None and start is None)
        timeline.keep = keep
        new_only = selection.follow and session is None and start is None
        reader = Reader(js, subject, start_time=start, new_only=new_only)
        async with reader:
            status = max(status, await _backlog(reader, timeline, selection, session, kept))
            out.flush()
            if selection.follow:
                await _follow(reader, timeline, selection, out)
        if timeline.shown == 0 and status == EXIT_OK and not selection.follow:
            warn("no events match")
            return EXIT_NOT_FOUND
        if selection.turn is not None and status == EXIT_OK and timeline.shown == 0:
            return _turn_missing(selection.turn, kept)
        return status


def _before_oldest(at: datetime, kept: Retention) -> bool:
    return kept.has_dropped and kept.first_time is not None and at < kept.first_time


def _turn_missing(turn: uuid.UUID, kept: Retention) -> int:
    if kept.has_dropped:
        warn(f"turn {turn} is not in the stream; it may have aged out: {kept.explain()}")
        return EXIT_AGED_OUT
    warn(f"turn {turn} is not in the stream")
    return EXIT_NOT_FOUND


async def _backlog(
    reader: Reader,
    timeline: Timeline,
    selection: Selection,
    session: uuid.UUID | None,
    kept: Retention,
) -> int:
    status, first = EXIT_OK, True
    with Progress(total=reader.pending, desc="reading", unit="ev", min_total=5000) as bar:
        async for raws in reader.backlog():
            for raw in raws:
                row = parse(raw)
                if selection.until is not None and row.stored_at > selection.until:
                    return status
                if first and session is not None and selection.since is None:
                    first = False
                    try:
                        check_session_complete(session, [row], kept)
                    except (AgedOut, NotInStream) as exc:
                        timeline.numbered = False  # the first turns are missing
                        warn(f"{exc}. Showing what is left")
                        status = EXIT_AGED_OUT if isinstance(exc, AgedOut) else status
                timeline.write(row)
            bar.update(len(raws))
    if first and session is not None and selection.since is None and not selection.follow:
        try:
            check_session_complete(session, [], kept)
        except AgedOut as exc:
            warn(str(exc))
            return EXIT_AGED_OUT
        except NotInStream as exc:
            warn(str(exc))
            return EXIT_NOT_FOUND
    return status


async def _follow(reader: Reader, timeline: Timeline, selection: Selection, out: TextIO) -> None:
    """New events as they are stored, until cancelled (Ctrl-C)."""
    while True:
        for raw in await reader.batch(timeout_s=5.0):
            row = parse(raw)
            if selection.until is not None and row.stored_at > selection.until:
                return
            timeline.write(row)
        out.flush()


def run(args: Any) -> int:
    try:
        selection = Selection(
            session=uuid.UUID(args.session) if args.session else None,
            turn=uuid.UUID(args.turn) if args.turn else None,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            follow=args.follow,
        )
    except ValueError as exc:
        warn(f"bad argument: {exc}")
        return 2
    work = show(args.nats_url, selection, as_json=args.json, out=sys.stdout)
    try:
        # Ctrl-C is how --follow ends, so that is a success; elsewhere it is an interruption.
        return run_until_interrupted(work, on_interrupt=EXIT_OK if selection.follow else 130)
    except StreamUnavailable as exc:
        warn(str(exc))
        return EXIT_NOT_FOUND
