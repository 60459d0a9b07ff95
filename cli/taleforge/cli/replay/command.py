"""`taleforge replay`: `--renarrate` a session on scratch state, or `--rebuild --into URL`.

Exit codes: 0 done; 1 not found, unreachable or bad configuration; 2 bad arguments; 3 the
session's start aged out of the stream; 130 stopped with Ctrl-C (what was done is shown).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from taleforge.cli.progress import run_until_interrupted

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_AGED_OUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def warn(message: str) -> None:
    print(f"taleforge replay: {message}", file=sys.stderr, flush=True)


def run(args: Any) -> int:
    if args.rebuild == args.renarrate:
        warn("choose one: --renarrate --session S, or --rebuild --into DATABASE_URL")
        return EXIT_USAGE
    if args.rebuild:
        if not args.into:
            warn("--rebuild needs --into DATABASE_URL (a scratch or empty database)")
            return EXIT_USAGE
        return rebuild(args)
    if not args.session:
        warn("--renarrate needs --session SESSION_ID")
        return EXIT_USAGE
    return renarrate(args)


def rebuild(args: Any) -> int:
    from taleforge.persistence.rebuild import RebuildReport
    from taleforge.persistence.rebuild import rebuild as rebuild_database

    report: RebuildReport | None = None

    async def work() -> int:
        nonlocal report
        report = await rebuild_database(
            args.into, args.nats_url, batch_size=args.batch_size, progress=True
        )
        return EXIT_OK

    try:
        code = run_until_interrupted(work(), on_interrupt=EXIT_INTERRUPTED)
    except Exception as exc:  # unreachable NATS or database, a failing target
        warn(f"rebuild failed: {type(exc).__name__}: {exc}")
        return EXIT_NOT_FOUND
    if report is None:
        warn("rebuild interrupted; run it again to finish (applied events are skipped)")
        return code
    print(
        f"rebuilt {report.events} events up to seq {report.last_seq} in {report.seconds:.1f}s"
        f" ({report.rate:.0f} events/s) into {_redacted(args.into)}; "
        f"{report.dead_letters} dead letters"
    )
    return code


def _redacted(url: str) -> str:
    """The URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"


def renarrate(args: Any) -> int:
    from taleforge.cli.replay.renarrate import Comparison, ReplayReport
    from taleforge.cli.replay.renarrate import renarrate as renarrate_session
    from taleforge.cli.replay.render import comparison_json, footer, header, side_by_side
    from taleforge.cli.stream import AgedOut, NotInStream, StreamUnavailable
    from taleforge.narrator.history import HistoryGap
    from taleforge.narrator.settings import Settings

    try:
        session_id = uuid.UUID(args.session)
        settings = Settings()
    except (ValueError, ValidationError) as exc:
        warn(f"bad argument or narrator configuration: {exc}")
        return EXIT_USAGE
    report = ReplayReport(
        session_id=session_id,
        run_id=uuid.uuid4().hex[:12],
        from_turn=args.from_turn,
        model=args.model,
        temperature=args.temperature,
    )
    started = False

    def on_turn(comparison: Comparison) -> None:
        nonlocal started
        if not started and not args.json:
            tqdm.write(header(report), file=sys.stdout)
            started = True
        text = comparison_json(comparison) if args.json else side_by_side(comparison)
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    async def work() -> int:
        try:
            await renarrate_session(
                args.nats_url, session_id, report, settings=settings, on_turn=on_turn
            )
        except asyncio.CancelledError:
            # Ctrl-C: the turn in hand is abandoned; what was done is reported below.
            report.interrupted = True
        except AgedOut as exc:
            warn(f"{exc}; a replay needs the session from its start")
            return EXIT_AGED_OUT
        except (NotInStream, HistoryGap, StreamUnavailable) as exc:
            warn(str(exc))
            return EXIT_NOT_FOUND
        return EXIT_INTERRUPTED if report.interrupted else EXIT_OK

    code = run_until_interrupted(work(), on_interrupt=EXIT_INTERRUPTED)
    if report.turns or report.interrupted:
        if args.json:
            if report.interrupted:
                warn(footer(report))
        else:
            print(footer(report))
    return code
