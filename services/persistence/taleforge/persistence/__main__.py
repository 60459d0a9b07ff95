"""`python -m taleforge.persistence [run | migrate | rebuild --into URL]`.

- `run` (default): the service, configured from the environment.
- `migrate`: migrate DATABASE_URL and declare the event log, then exit.
- `rebuild --into URL`: replay the whole STORY stream into the database at URL (migrated
  first) with a progress bar on stderr; NATS from `--nats-url` or NATS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from taleforge.persistence import telemetry
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.app import create_app
from taleforge.persistence.bootstrap import declare_event_log, migrate_database
from taleforge.persistence.rebuild import rebuild
from taleforge.persistence.settings import Settings


async def migrate(settings: Settings) -> None:
    await migrate_database(settings)
    await declare_event_log(settings)


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m taleforge.persistence")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the service (the default)")
    commands.add_parser("migrate", help="migrate DATABASE_URL, declare the stream, exit")
    rebuilding = commands.add_parser(
        "rebuild", help="replay the whole event log into a database (empty or scratch)"
    )
    rebuilding.add_argument(
        "--into", required=True, metavar="DATABASE_URL", help="postgresql+asyncpg://… target"
    )
    rebuilding.add_argument("--nats-url", default=settings.nats_url, help="default: NATS_URL")
    rebuilding.add_argument(
        "--batch-size", type=int, default=500, help="events per fetch and transaction"
    )
    rebuilding.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _rebuild(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(
            rebuild(
                args.into,
                args.nats_url,
                batch_size=args.batch_size,
                progress=not args.no_progress,
            )
        )
    except KeyboardInterrupt:
        print("rebuild interrupted; run it again to finish", file=sys.stderr)
        return 130
    print(
        f"rebuilt {report.events} events up to seq {report.last_seq} in {report.seconds:.1f}s"
        f" ({report.rate:.0f} events/s); {report.dead_letters} dead letters",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str]) -> int:
    settings = Settings()
    args = _parser(settings).parse_args(argv)
    logging.basicConfig(
        level=settings.persistence_log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "migrate":
        asyncio.run(migrate(settings))
        return 0
    if args.command == "rebuild":
        return _rebuild(args)
    telemetry.setup(settings)
    repository = Repository(create_engine(settings.database_url))
    app = create_app(settings, repository=repository)
    telemetry.instrument(app, repository.engine)
    asyncio.run(app.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
