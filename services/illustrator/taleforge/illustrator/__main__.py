"""`python -m taleforge.illustrator`: run the illustrator from environment configuration."""

from __future__ import annotations

import asyncio
import logging
import os

from taleforge.illustrator.app import create_app
from taleforge.illustrator.settings import Settings


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(create_app(Settings()).run())


if __name__ == "__main__":
    main()
