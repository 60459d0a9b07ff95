"""The debugging commands' arguments: `events`, `show-prompt`, `replay`.

Only argparse here; each command imports its module when it runs, so `taleforge --help`
and the other commands stay fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def _nats_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="default: NATS_URL or nats://127.0.0.1:4222",
    )


def cmd_events(args: argparse.Namespace) -> int:
    from taleforge.cli.events import run

    return run(args)


def cmd_show_prompt(args: argparse.Namespace) -> int:
    from taleforge.cli.show_prompt import run

    return run(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from taleforge.cli.replay.command import run

    return run(args)


def add_debug_commands(sub: Any) -> None:
    """Register the commands on the `taleforge` sub-parsers."""
    events = sub.add_parser(
        "events",
        help="timeline of a session, a turn or a time window (--follow tails it)",
        description="Exit codes: 0 shown, 1 not found, 3 (partly) aged out of the stream.",
    )
    events.add_argument("--session", help="session id")
    events.add_argument("--turn", help="turn id: that turn's events only")
    events.add_argument("--since", help="ISO time (UTC if naive) or an age: 90s, 15m, 2h, 3d")
    events.add_argument("--until", help="ISO time or an age, like --since")
    events.add_argument("--follow", action="store_true", help="keep tailing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    _nats_url(events)
    events.set_defaults(func=cmd_events)

    show = sub.add_parser(
        "show-prompt",
        help="the exact prompt the narrator sent for a turn",
        description="Rebuilt from the event log and checked against the recorded sha256. "
        "Exit codes: 0 shown, 1 not found, 3 aged out, 4 not equal to what was sent.",
    )
    show.add_argument("turn_id")
    show.add_argument("--session", help="the turn's session (skips a scan of the stream)")
    show.add_argument("--json", action="store_true", help="the prompt as the request carried it")
    _nats_url(show)
    show.set_defaults(func=cmd_show_prompt)

    replay = sub.add_parser(
        "replay",
        help="re-narrate a session on scratch state, or rebuild a database from the log",
        description="--renarrate: the narrator re-runs the session's recorded turns on "
        "scratch state (nothing live changes) with OPENAI_BASE_URL/OPENAI_API_KEY and the "
        "NARRATOR_* settings, and shows both versions side by side with tokens and cost. "
        "--rebuild: replays the whole stream into --into DATABASE_URL.",
    )
    mode = replay.add_mutually_exclusive_group(required=True)
    mode.add_argument("--renarrate", action="store_true", help="re-run the narrator")
    mode.add_argument("--rebuild", action="store_true", help="rebuild a database")
    replay.add_argument("--session", help="session id (--renarrate)")
    replay.add_argument("--model", help="narrate with this model (default: as recorded)")
    replay.add_argument("--temperature", type=float, help="default: as recorded")
    replay.add_argument(
        "--from-turn", type=int, default=1, help="first turn to re-narrate (1-based)"
    )
    replay.add_argument("--json", action="store_true", help="one JSON object per turn")
    replay.add_argument("--into", metavar="DATABASE_URL", help="postgresql+asyncpg://… target")
    replay.add_argument("--batch-size", type=int, default=500, help="--rebuild: events per batch")
    _nats_url(replay)
    replay.set_defaults(func=cmd_replay)
