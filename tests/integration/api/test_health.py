"""Liveness and readiness on real servers, and on a Postgres that is not there."""

from __future__ import annotations

import uuid

import pytest

from taleforge.api.auth import issue_token
from taleforge.api.settings import DEV_JWT_SECRET

pytestmark = pytest.mark.integration


async def test_ready_when_nats_and_postgres_answer(api) -> None:  # type: ignore[no-untyped-def]
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok"}


async def test_not_ready_without_postgres(start_api) -> None:  # type: ignore[no-untyped-def]
    nowhere = "postgresql+asyncpg://nobody:x@127.0.0.1:9/nothing"
    async with start_api(nowhere, db_connect_timeout_s=1) as (_, http):
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        token = issue_token(uuid.uuid4(), secret=DEV_JWT_SECRET)
        turn = await http.get(
            f"/api/turns/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
        )
    assert turn.status_code == 503, turn.text
    assert turn.headers["content-type"] == "application/problem+json"
    assert "database" in turn.json()["detail"] and "Traceback" not in turn.text
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["status"] == 503 and "Postgres" in body["detail"]
    assert body["checks"]["nats"] == "ok"
