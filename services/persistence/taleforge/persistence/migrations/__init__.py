"""Alembic migrations for the read model, configured in code (no alembic.ini needed).

`upgrade_to_head(url)` is safe from plain sync code; inside an event loop use
`await upgrade_to_head_async(url)`. Both run Alembic in a worker thread with its own event
loop, because the async engine in `env.py` needs one and must not touch the caller's.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an ini option: ini interpolation would mangle a '%' in
    # a password.
    config.attributes["database_url"] = database_url
    return config


def _run_in_thread(target: object, *args: object) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)  # type: ignore[operator]
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="alembic", daemon=True)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def upgrade(database_url: str, revision: str = "head") -> None:
    _run_in_thread(command.upgrade, alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    _run_in_thread(command.downgrade, alembic_config(database_url), revision)


def upgrade_to_head(database_url: str) -> None:
    """Bring the database at `database_url` (postgresql+asyncpg://…) to the newest schema."""
    upgrade(database_url, "head")


async def upgrade_to_head_async(database_url: str) -> None:
    """`upgrade_to_head` for callers inside an event loop; does not block the loop."""
    await asyncio.to_thread(upgrade_to_head, database_url)
