"""The ack / term / nak decision for one delivery, with a hand-written fake store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncpg.exceptions import CannotConnectNowError
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from taleforge.contracts import SessionStarted, StoryEvent
from taleforge.persistence.delivery import ACK, TERM, Delivery, RetryPolicy, Verdict, decide
from taleforge.persistence.projection import EventRejected

POLICY = RetryPolicy(base_s=0.5, max_s=4.0, unexpected_error_attempts=3)


@dataclass
class FakeStore:
    fail_with: BaseException | None = None
    dead_letter_fails: bool = False
    applied: list[tuple[StoryEvent, int | None]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    seen: set[uuid.UUID] = field(default_factory=set)

    async def apply_event(self, event: StoryEvent, stream_seq: int | None = None) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        if event.event_id in self.seen:
            return False
        self.seen.add(event.event_id)
        self.applied.append((event, stream_seq))
        return True

    async def record_dead_letter(self, **letter: Any) -> None:
        if self.dead_letter_fails:
            raise ConnectionRefusedError("postgres is down")
        self.dead_letters.append(letter)


def delivery(payload: bytes | None = None, attempt: int = 1, seq: int = 7) -> Delivery:
    if payload is None:
        payload = SessionStarted(
            session_id=uuid.uuid4(), user_id=uuid.uuid4(), scenario_id="s", title="t"
        ).to_bytes()
    return Delivery(
        subject="story.events.x.session.started", payload=payload, stream_seq=seq, attempt=attempt
    )


async def test_a_valid_event_is_applied_and_acked() -> None:
    store = FakeStore()
    d = delivery()
    assert await decide(store, d, POLICY) == ACK
    assert store.applied[0][1] == 7
    assert await decide(store, d, POLICY) == ACK  # redelivered: a no-op, acked again
    assert len(store.applied) == 1


async def test_a_malformed_message_is_dead_lettered_and_terminated() -> None:
    store = FakeStore()
    assert await decide(store, delivery(b"not json"), POLICY) == TERM
    [letter] = store.dead_letters
    assert letter["stream_seq"] == 7
    assert letter["reason"].startswith("invalid event: payload is not JSON")
    assert letter["payload"] == b"not json"


async def test_a_rejected_event_is_dead_lettered_and_terminated() -> None:
    store = FakeStore(fail_with=EventRejected("unknown session 1"))
    assert await decide(store, delivery(), POLICY) == TERM
    assert store.dead_letters[0]["reason"] == "unknown session 1"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        # How SQLAlchemy hands over asyncpg's error while Postgres recovers from a restart.
        DBAPIError("SELECT 1", {}, CannotConnectNowError("the database system is starting up")),
    ],
)
async def test_a_transient_error_is_retried_with_capped_backoff(error: BaseException) -> None:
    store = FakeStore(fail_with=error)
    delays = [(await decide(store, delivery(attempt=n), POLICY)) for n in (1, 2, 3, 10, 500)]
    assert delays == [Verdict("nak", d) for d in (0.5, 1.0, 2.0, 4.0, 4.0)]
    assert store.dead_letters == []


async def test_an_unexpected_error_is_retried_then_dead_lettered() -> None:
    store = FakeStore(fail_with=ProgrammingError("SELECT", {}, Exception("no such column")))
    assert (await decide(store, delivery(attempt=2), POLICY)).action == "nak"
    assert await decide(store, delivery(attempt=3), POLICY) == TERM
    assert "gave up after 3 deliveries" in store.dead_letters[0]["reason"]


async def test_no_term_without_a_dead_letter_record() -> None:
    store = FakeStore(dead_letter_fails=True)
    assert (await decide(store, delivery(b"[]"), POLICY)).action == "nak"
