"""`python -m taleforge.illustrator`: run the illustrator, or `templates ...` to manage them."""

from __future__ import annotations

import asyncio
import logging
import sys

from taleforge.illustrator import telemetry
from taleforge.illustrator.app import create_app
from taleforge.illustrator.settings import Settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = Settings()
    if argv:
        from taleforge.illustrator.cli import run_command

        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return run_command(argv, settings)
    telemetry.setup(settings)
    asyncio.run(create_app(settings).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
