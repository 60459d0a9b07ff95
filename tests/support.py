"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes the plain `postgresql://` form of our SQLAlchemy URLs."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
