"""The debugging commands' pure parts: times, key fields, retention wording, side by side."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from taleforge.cli.events import key_fields, parse_time
from taleforge.cli.main import build_parser
from taleforge.cli.replay.command import _redacted
from taleforge.cli.replay.renarrate import Comparison, ReplayReport, Version
from taleforge.cli.replay.render import side_by_side, totals
from taleforge.cli.stream import Retention
from taleforge.contracts import (
    DeliveryExhausted,
    InputType,
    NarrationCompleted,
    TokenUsage,
    TurnRequested,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_times_are_iso_or_ages() -> None:
    assert parse_time("15m", now=NOW) == NOW - timedelta(minutes=15)
    assert parse_time("1.5h", now=NOW) == NOW - timedelta(hours=1.5)
    assert parse_time("2026-01-02T03:00:00") == datetime(2026, 1, 2, 3, tzinfo=UTC)
    assert parse_time("2026-01-02T03:00:00Z") == datetime(2026, 1, 2, 3, tzinfo=UTC)
    assert parse_time("2026-01-02T04:00:00+01:00") == datetime(2026, 1, 2, 3, tzinfo=UTC)


def test_key_fields_say_what_a_reader_needs() -> None:
    ids = {"session_id": uuid.uuid4(), "user_id": uuid.uuid4(), "turn_id": uuid.uuid4()}
    completed = NarrationCompleted(
        **ids,
        text="Fog rolls in. " * 10,
        model="gpt-4.1-mini",
        usage=TokenUsage(input_tokens=812, cached_tokens=640, output_tokens=61),
        cost_usd=0.000196,
        duration_ms=1234,
    )
    line = key_fields(completed)
    assert line.startswith("gpt-4.1-mini in 812 (cached 640) out 61 $0.000196 1.23s: ")
    assert line.endswith('…"')
    turn = TurnRequested(**ids, input_type=InputType.SPEECH, text="Who  goes\nthere?")
    assert key_fields(turn) == 'speech: "Who goes there?"'
    exhausted = DeliveryExhausted(
        **ids, consumer="narrator", request_seq=42, request_type="turn.requested", deliveries=5
    )
    assert key_fields(exhausted) == "narrator gave up on turn.requested #42 (5x)"


def test_retention_is_explained_with_its_limits() -> None:
    kept = Retention(
        max_age_s=30 * 86400,
        max_bytes=-1,
        max_msgs=5,
        messages=5,
        bytes=900,
        first_seq=6,
        last_seq=10,
        first_time=NOW,
    )
    assert kept.has_dropped
    assert kept.explain() == (
        "retention removes events older than 30 days and the oldest beyond 5 events "
        "(STREAM_MAX_AGE_S, STREAM_MAX_BYTES); the stream's oldest event is seq 6, "
        "from 2026-01-02T03:04:05.000Z"
    )


def test_side_by_side_shows_both_versions_with_tokens_and_cost() -> None:
    request = TurnRequested(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=InputType.ACTION,
        text="I dive",
    )
    usage = TokenUsage(input_tokens=100, output_tokens=50)
    comparison = Comparison(
        number=4,
        request=request,
        original=Version("Cold water closes over you. " * 6, "gpt-4.1-mini", usage, 0.00012),
        replay=Version(failed="provider_rejected: no"),
    )
    shown = side_by_side(comparison, 100).splitlines()
    assert shown[0].startswith("══ turn #4 · action: 'I dive' ══") and len(shown[0]) == 100
    assert shown[1].startswith("original · gpt-4.1-mini") and "│ replay · -" in shown[1]
    assert "in 100 out 50 · $0.000120" in shown[2] and "│ no tokens · $?" in shown[2]
    assert "│ [provider_rejected: no]" in "\n".join(shown)
    assert all(len(line) <= 100 for line in shown)
    report = ReplayReport(request.session_id, "r", 4, "gpt-4.1", None, 1, [comparison])
    assert totals(report).splitlines()[1].startswith("replay    0/1 narrated")


def test_commands_parse_and_urls_lose_their_password() -> None:
    parser = build_parser()
    args = parser.parse_args(["replay", "--renarrate", "--session", "s", "--from-turn", "3"])
    assert (args.renarrate, args.rebuild, args.from_turn, args.model) == (True, False, 3, None)
    args = parser.parse_args(["show-prompt", "t", "--json"])
    assert (args.turn_id, args.json) == ("t", True)
    args = parser.parse_args(["events", "--since", "15m", "--follow"])
    assert (args.since, args.follow, args.session) == ("15m", True, None)
    assert _redacted("postgresql+asyncpg://app:secret@db:5432/x") == (
        "postgresql+asyncpg://app:***@db:5432/x"
    )
    assert _redacted("postgresql+asyncpg://db/x") == "postgresql+asyncpg://db/x"
