"""`python -m taleforge.narrator`: run the narrator from environment configuration."""

from __future__ import annotations

import asyncio
import logging

from taleforge.narrator import telemetry
from taleforge.narrator.app import create_app
from taleforge.narrator.settings import Settings


def main() -> None:
    settings = Settings()
    telemetry.setup(settings)
    logging.getLogger(__name__).info(
        "narrator: nats=%s model=%s base_url=%s",
        settings.nats_url,
        settings.model,
        settings.openai_base_url,
    )
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
