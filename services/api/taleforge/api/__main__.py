"""`python -m taleforge.api`: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import logging

import uvicorn

from taleforge.api.app import create_app
from taleforge.api.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
