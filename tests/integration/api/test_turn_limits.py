"""The limits on real NATS and Postgres, across two API replicas: one turn in flight per
session (409), freed by the turn's end or the lock's expiry; the per-player request rate
(429, shared by the replicas); the daily budget from the usage ledger (429 with
Retry-After); the body size (413); and GET /api/usage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from taleforge.api.limits.turn_lock import BUCKET as LOCK_BUCKET

from .conftest import Rows
from .stream_support import FakeNarrator, auth, replica

pytestmark = pytest.mark.integration

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def _turn(session_id: uuid.UUID, text: str = "I knock.") -> dict[str, str]:
    return {"session_id": str(session_id), "input_type": "action", "text": text}


async def test_one_turn_at_a_time_per_session_across_replicas(  # type: ignore[no-untyped-def]
    nats_url, migrated_database_url, nats_client: NatsClient, db: asyncpg.Connection, http
) -> None:
    player = uuid.uuid4()
    session_id = await Rows(db).session(player)
    other_session = await Rows(db).session(player)
    narrator = FakeNarrator(nats_client)
    with (
        replica(nats_url, migrated_database_url) as first,
        replica(nats_url, migrated_database_url) as second,
    ):
        accepted = await http.post(
            f"{first}/api/story/progress", json=_turn(session_id), headers={**auth(player), **ASYNC}
        )
        assert accepted.status_code == 202
        turn_id = accepted.json()["turn_id"]

        busy = await http.post(
            f"{second}/api/story/progress",
            json=_turn(session_id),
            headers={**auth(player), **ASYNC},
        )
        assert busy.status_code == 409
        assert busy.headers["content-type"] == "application/problem+json"
        assert busy.json()["turn_id"] == turn_id and busy.json()["status"] == 409
        # Another session of the same player is not held up.
        elsewhere = await http.post(
            f"{second}/api/story/progress",
            json=_turn(other_session),
            headers={**auth(player), **ASYNC},
        )
        assert elsewhere.status_code == 202

        # The turn ends while nobody follows it: the next POST sees that on the stream.
        turn = await narrator.next_request(session_id)
        assert str(turn.turn_id) == turn_id
        await narrator.completed(turn, "The door opens.")
        after = await http.post(
            f"{second}/api/story/progress",
            json=_turn(session_id, "I go in."),
            headers={**auth(player), **ASYNC},
        )
        assert after.status_code == 202, after.text

        # A retried request with the same Idempotency-Key is the same turn, not a conflict.
        retry_headers = {**auth(player), **ASYNC, "Idempotency-Key": "k-1"}
        next_turn = await narrator.next_request(session_id)
        await narrator.failed(next_turn)
        once = await http.post(
            f"{first}/api/story/progress", json=_turn(session_id), headers=retry_headers
        )
        twice = await http.post(
            f"{second}/api/story/progress", json=_turn(session_id), headers=retry_headers
        )
        assert once.status_code == twice.status_code == 202
        assert once.json()["turn_id"] == twice.json()["turn_id"]


async def test_a_lock_nobody_releases_expires(  # type: ignore[no-untyped-def]
    nats_url, migrated_database_url, nats_client: NatsClient, db: asyncpg.Connection, http
) -> None:
    """A replica that died mid-turn (and a narrator that never answers) cannot wedge the
    session: the lock's TTL frees it."""
    player = uuid.uuid4()
    session_id = await Rows(db).session(player)
    with replica(nats_url, migrated_database_url, turn_lock_ttl_s=1.0) as api:
        first = await http.post(
            f"{api}/api/story/progress", json=_turn(session_id), headers={**auth(player), **ASYNC}
        )
        assert first.status_code == 202
        kv = await nats_client.jetstream().key_value(LOCK_BUCKET)
        assert (await kv.get(str(session_id))).value == first.json()["turn_id"].encode()
        # Wait on the lock itself, not on a guess of how long expiry takes.
        async with asyncio.timeout(20):
            while True:
                response = await http.post(
                    f"{api}/api/story/progress",
                    json=_turn(session_id),
                    headers={**auth(player), **ASYNC},
                )
                if response.status_code == 202:
                    break
                assert response.status_code == 409
                await asyncio.sleep(0.25)


async def test_the_request_rate_is_shared_by_the_replicas(  # type: ignore[no-untyped-def]
    nats_url, migrated_database_url, nats_client: NatsClient, http
) -> None:
    player, other = uuid.uuid4(), uuid.uuid4()
    with (
        replica(nats_url, migrated_database_url, rate_limit_per_min=4) as first,
        replica(nats_url, migrated_database_url, rate_limit_per_min=4) as second,
    ):
        url = f"/api/turns/{uuid.uuid4()}"
        statuses = [
            (await http.get(f"{base}{url}", headers=auth(player))).status_code
            for base in (first, second, first, second)
        ]
        assert statuses == [404] * 4
        limited = await http.get(f"{second}{url}", headers=auth(player))
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Other players have their own count.
        assert (await http.get(f"{first}{url}", headers=auth(other))).status_code == 404


async def test_a_used_up_daily_budget_refuses_turns_and_usage_shows_it(  # type: ignore[no-untyped-def]
    nats_url, migrated_database_url, nats_client: NatsClient, db: asyncpg.Connection, http
) -> None:
    player = uuid.uuid4()
    session_id = await Rows(db).session(player)
    today = datetime.now(UTC).date()
    await db.execute(
        "INSERT INTO usage_ledger (user_id, day, completed_turns, input_tokens, output_tokens,"
        " total_tokens, cost_usd) VALUES ($1, $2, 3, 900, 200, 1100, 0.25)",
        player,
        today,
    )
    with replica(nats_url, migrated_database_url, daily_token_budget=1000) as api:
        refused = await http.post(
            f"{api}/api/story/progress", json=_turn(session_id), headers={**auth(player), **ASYNC}
        )
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert "budget" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 86400

        usage = await http.get(f"{api}/api/usage", headers=auth(player))
        assert usage.status_code == 200
        body = usage.json()
        assert body["days"] == [
            {
                "day": today.isoformat(),
                "completed_turns": 3,
                "input_tokens": 900,
                "cached_tokens": 0,
                "output_tokens": 200,
                "reasoning_tokens": 0,
                "total_tokens": 1100,
                "cost_usd": 0.25,
            }
        ]
        assert body["total_tokens"] == 1100 and body["daily_token_budget"] == 1000
        # Another player's ledger is theirs alone.
        assert (await http.get(f"{api}/api/usage", headers=auth(uuid.uuid4()))).json()["days"] == []

    with replica(nats_url, migrated_database_url, daily_cost_budget_usd=0.2) as api:
        refused = await http.post(
            f"{api}/api/story/progress", json=_turn(session_id), headers={**auth(player), **ASYNC}
        )
        assert refused.status_code == 429 and "$" in refused.json()["detail"]
    with replica(nats_url, migrated_database_url, daily_token_budget=2000) as api:
        fine = await http.post(
            f"{api}/api/story/progress", json=_turn(session_id), headers={**auth(player), **ASYNC}
        )
        assert fine.status_code == 202


async def test_too_large_bodies_are_413_problems(  # type: ignore[no-untyped-def]
    nats_url, migrated_database_url, nats_client: NatsClient, db: asyncpg.Connection, http
) -> None:
    player = uuid.uuid4()
    session_id = await Rows(db).session(player)
    with replica(nats_url, migrated_database_url, max_body_bytes=2048) as api:
        big = {**_turn(session_id), "text": "x" * 4000}
        response = await http.post(f"{api}/api/story/progress", json=big, headers=auth(player))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"session_id": "' + str(session_id).encode() + b'", "text": "'
            for _ in range(10):
                yield b"y" * 400
            yield b'", "input_type": "speech"}'

        streamed = await http.post(
            f"{api}/api/story/progress",
            content=chunks(),
            headers={**auth(player), "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413
        assert streamed.headers["content-type"] == "application/problem+json"
