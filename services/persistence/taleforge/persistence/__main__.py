"""`python -m taleforge.persistence` runs the service; `… migrate` migrates and exits."""

from __future__ import annotations

import asyncio
import logging
import sys

from taleforge.persistence.app import create_app
from taleforge.persistence.bootstrap import declare_event_log, migrate_database
from taleforge.persistence.settings import Settings

USAGE = "usage: python -m taleforge.persistence [run | migrate]"


async def migrate(settings: Settings) -> None:
    await migrate_database(settings)
    await declare_event_log(settings)


def main(argv: list[str]) -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.persistence_log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = argv[0] if argv else "run"
    if command == "migrate":
        asyncio.run(migrate(settings))
        return 0
    if command == "run":
        asyncio.run(create_app(settings).run())
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
