"""`python -m taleforge.illustrator`: run the illustrator from environment configuration."""

from __future__ import annotations

import asyncio
import logging

from taleforge.illustrator.app import create_app
from taleforge.illustrator.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
