"""The API with the real persistence service behind it, on one NATS and one database.

Sessions, saves and admin changes go through the real projection, so a test sees what a
player would. A test stands in for the narrator by publishing its events (`narrate`).
Import the fixture into a test module: `from .persisted import stack_fixture  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from faststream import TestApp
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from taleforge.api.auth import AdminRule, issue_token
from taleforge.api.settings import DEV_JWT_SECRET
from taleforge.contracts import (
    STREAM_NAME,
    Envelope,
    ImageCompleted,
    ImageRequested,
    NarrationCompleted,
    TokenUsage,
    TurnRequested,
    publish_headers,
)
from taleforge.persistence.app import create_app as create_persistence
from taleforge.persistence.settings import Settings as PersistenceSettings

from .conftest import api_settings, running_api


def player(user_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user_id, secret=DEV_JWT_SECRET)}"}


def admin(user_id: uuid.UUID) -> dict[str, str]:
    token = issue_token(user_id, secret=DEV_JWT_SECRET, extra_claims=AdminRule().claims())
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Stack:
    http: httpx.AsyncClient
    js: JetStreamContext
    db: asyncpg.Connection
    settings: Any

    async def publish(self, event: Envelope) -> int:
        ack = await self.js.publish(
            event.subject(), event.to_bytes(), headers=publish_headers(event)
        )
        return int(ack.seq)

    async def stream_size(self) -> int:
        return int((await self.js.stream_info(STREAM_NAME)).state.messages)

    async def projected(self, sql: str, *args: Any, timeout: float = 20.0) -> Any:
        """Wait until `sql` returns a truthy first value (persistence has caught up)."""
        return await wait_until(lambda: self.db.fetchval(sql, *args), timeout)

    async def start(self, user_id: uuid.UUID, **body: Any) -> dict[str, Any]:
        response = await self.http.post("/api/sessions", json=body, headers=player(user_id))
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        return session

    async def narrate(
        self,
        session_id: str,
        user_id: uuid.UUID,
        text: str,
        *,
        image: bool = False,
        complete: bool = True,
    ) -> uuid.UUID:
        """A turn as the API and the narrator (and illustrator) would publish it."""
        ids: dict[str, Any] = {
            "session_id": uuid.UUID(session_id),
            "user_id": user_id,
            "turn_id": uuid.uuid4(),
        }
        await self.publish(TurnRequested(**ids, input_type="action", text=text))
        if complete:
            await self.publish(
                NarrationCompleted(
                    **ids,
                    text=f"Narration of: {text}",
                    model="m",
                    usage=TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15),
                    cost_usd=0.01,
                )
            )
        if image:
            image_id = uuid.uuid4()
            await self.publish(
                ImageRequested(**ids, image_id=image_id, prompt=f"a picture: {text}")
            )
            await self.publish(
                ImageCompleted(
                    **ids,
                    image_id=image_id,
                    bucket="taleforge-images",
                    object_name=f"{image_id}.png",
                    size_bytes=10,
                    sha256="0" * 64,
                    width=64,
                    height=64,
                )
            )
        status = "completed" if complete else "pending"
        await self.projected(
            "SELECT true FROM turns WHERE id = $1 AND status = $2", ids["turn_id"], status
        )
        if image:
            await self.projected(
                "SELECT true FROM images WHERE turn_id = $1 AND status = 'completed'",
                ids["turn_id"],
            )
        turn_id: uuid.UUID = ids["turn_id"]
        return turn_id


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture(name="stack")
async def stack_fixture(
    nats_url: str,
    migrated_database_url: str,
    nats_client: NatsClient,
    db: asyncpg.Connection,
) -> AsyncIterator[Stack]:
    persistence = create_persistence(
        PersistenceSettings(
            nats_url=nats_url,
            database_url=migrated_database_url,
            persistence_migrate_on_start=False,
        )
    )
    settings = api_settings(nats_url, migrated_database_url, session_visible_timeout_s=20.0)
    async with TestApp(persistence), running_api(settings) as (app, http):
        yield Stack(http=http, js=nats_client.jetstream(), db=db, settings=app.state.settings)
