"""`python -m taleforge.api`: serve the API with uvicorn, configured from the environment."""

from __future__ import annotations

import uvicorn

from taleforge.api import telemetry
from taleforge.api.app import create_app
from taleforge.api.settings import Settings


def main() -> None:
    settings = Settings()
    telemetry.setup(settings)
    app = telemetry.instrument(create_app(settings))
    # log_config=None: uvicorn's lines go through our handler and format too.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, log_level="info")


if __name__ == "__main__":
    main()
