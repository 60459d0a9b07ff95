"""The API app on real NATS JetStream and Postgres, its lifespan run, driven in-process.

Persistence is simulated: tests INSERT the rows it would project.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from taleforge.api.app import create_app
from taleforge.api.auth import issue_token
from taleforge.api.settings import DEV_JWT_SECRET, Settings
from taleforge.contracts import STREAM_NAME
from taleforge.persistence.adapters.event_log import ensure_stream


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient
    js: JetStreamContext
    rows: Rows

    @staticmethod
    def auth(user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(user_id, secret=DEV_JWT_SECRET)}"}

    async def stream_size(self) -> int:
        return (await self.js.stream_info(STREAM_NAME)).state.messages  # type: ignore[no-any-return]


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(nats_url)
    await ensure_stream(nc.jetstream())
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_database_url.replace("+asyncpg", ""))
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan (NATS connected, engine disposed at the end)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield app, http


def api_settings(nats_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "session_visible_timeout_s": 2.0,
        "stream_wait_s": 2.0,
        **overrides,
    }
    return Settings(**values)


StartApi = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def start_api(nats_url: str, nats_client: NatsClient) -> StartApi:
    """Start an app on this test's NATS (stream declared) and the given database URL."""

    def start(database_url: str, **overrides: Any) -> Any:
        return running_api(api_settings(nats_url, database_url, **overrides))

    return start


@pytest.fixture
async def api(
    nats_url: str,
    migrated_database_url: str,
    nats_client: NatsClient,
    db: asyncpg.Connection,
) -> AsyncIterator[Api]:
    async with running_api(api_settings(nats_url, migrated_database_url)) as (app, http):
        yield Api(app=app, http=http, js=nats_client.jetstream(), rows=Rows(db))


class Rows:
    """INSERTs the rows persistence would project, with defaults a test can override."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def session(self, user_id: uuid.UUID, **values: Any) -> uuid.UUID:
        return await self._insert(
            "story_sessions",
            {
                "user_id": user_id,
                "scenario_id": "default",
                "title": "A test tale",
                "opening": "Once upon a time.",
                **values,
            },
        )

    async def turn(self, session_id: uuid.UUID, user_id: uuid.UUID, **values: Any) -> uuid.UUID:
        return await self._insert(
            "turns",
            {
                "session_id": session_id,
                "user_id": user_id,
                "seq": 1,
                "input_type": "speech",
                "input_text": "Hello?",
                "status": "pending",
                **values,
            },
        )

    async def image(self, turn_id: uuid.UUID, user_id: uuid.UUID, **values: Any) -> uuid.UUID:
        session_id = await self.db.fetchval("SELECT session_id FROM turns WHERE id = $1", turn_id)
        return await self._insert(
            "images",
            {
                "turn_id": turn_id,
                "session_id": session_id,
                "user_id": user_id,
                "kind": "scene",
                "status": "pending",
                "prompt": "a lantern by a river",
                **values,
            },
        )

    async def _insert(self, table: str, values: dict[str, Any]) -> uuid.UUID:
        row = {"id": uuid.uuid4(), **values}
        columns = ", ".join(row)
        params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        await self.db.execute(f"INSERT INTO {table} ({columns}) VALUES ({params})", *row.values())
        return row["id"]  # type: ignore[no-any-return]
