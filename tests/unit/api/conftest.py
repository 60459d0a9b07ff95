"""The API app without NATS or Postgres: the lifespan is not run, the database is faked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taleforge.api.app import create_app
from taleforge.api.auth import issue_token
from taleforge.api.deps import get_db
from taleforge.api.settings import DEV_JWT_SECRET, Settings


class EmptyResult:
    def first(self) -> None:
        return None

    def all(self) -> list[Any]:
        return []


class EmptyReadModel:
    """A connection on which every query finds nothing."""

    async def execute(self, query: Any) -> EmptyResult:
        return EmptyResult()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        nats_url="nats://127.0.0.1:1",
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        jwt_secret=DEV_JWT_SECRET,
    )


@pytest.fixture
def read_model() -> EmptyReadModel:
    return EmptyReadModel()


@pytest.fixture
def app(settings: Settings, read_model: EmptyReadModel) -> FastAPI:
    app = create_app(settings)

    async def fake_db() -> AsyncIterator[EmptyReadModel]:
        yield read_model

    app.dependency_overrides[get_db] = fake_db
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


@pytest.fixture
def user_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def auth(user_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user_id, secret=DEV_JWT_SECRET)}"}
