"""Postgres writes: apply events exactly once, record a dead letter.

Integrity and data errors from Postgres are as permanent as a missing parent row: the same
event would fail again, so they become `EventRejected`. Connection trouble is transient
(`is_transient`): the caller retries later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taleforge.contracts import StoryEvent
from taleforge.persistence.models import Base, DeadLetter
from taleforge.persistence.projection import EventRejected, project

dead_letters = Base.metadata.tables[DeadLetter.__tablename__]


# Every event id of a batch in one statement whatever its size (arrays, not N VALUES rows):
# the ids it returns are the events not applied before.
_RECORD_EVENTS = text(
    """
    INSERT INTO processed_events (event_id, event_type, session_id, stream_seq)
    SELECT * FROM unnest(CAST(:event_ids AS uuid[]), CAST(:types AS text[]),
                         CAST(:session_ids AS uuid[]), CAST(:seqs AS bigint[]))
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
)


def create_engine(database_url: str) -> AsyncEngine:
    # One connection at a time is all the consumer uses (batches apply in order).
    # pool_pre_ping: a connection Postgres dropped is replaced instead of failing an event.
    return create_async_engine(database_url, pool_size=1, pool_pre_ping=True)


# SQLSTATE classes that pass on their own: 08 connection exception, 53 insufficient resources
# (too many connections), 57 operator intervention (shutting down, "the database system is
# starting up"). asyncpg's errors for these reach us as a plain DBAPIError.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass on retry: the database is down, busy or restarting."""
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if exc.connection_invalidated or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class Repository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def apply_event(self, event: StoryEvent, stream_seq: int | None = None) -> bool:
        """Apply `event` once. False when it was already applied (a redelivery or replay)."""
        [applied] = await self.apply_batch([(event, stream_seq)])
        return applied

    async def apply_batch(self, events: Sequence[tuple[StoryEvent, int | None]]) -> list[bool]:
        """Apply `(event, stream_seq)` pairs in order, in one transaction: all or none.

        One statement records every event id; only the ids it newly inserted are projected,
        so events already applied (and repeats within the batch) change nothing. Returns,
        per event, whether it was applied now. Any failure rolls the whole batch back: the
        caller then applies the events one by one to find the one that fails.
        """
        if not events:
            return []
        try:
            async with self.engine.begin() as conn:
                new = set(
                    await conn.scalars(
                        _RECORD_EVENTS,
                        {
                            "event_ids": [event.event_id for event, _ in events],
                            "types": [event.type for event, _ in events],
                            "session_ids": [event.session_id for event, _ in events],
                            "seqs": [stream_seq for _, stream_seq in events],
                        },
                    )
                )
                applied = []
                for event, _ in events:
                    first_time = event.event_id in new
                    new.discard(event.event_id)
                    if first_time:
                        await project(conn, event)
                    applied.append(first_time)
        except (IntegrityError, DataError) as exc:
            what = events[0][0].type if len(events) == 1 else f"a batch of {len(events)}"
            raise EventRejected(f"{what} violates a constraint: {_first_line(exc)}") from exc
        return applied

    async def record_dead_letter(
        self,
        *,
        stream_seq: int | None,
        subject: str,
        payload: bytes,
        reason: str,
        delivery_count: int,
    ) -> None:
        """Keep a message the projection gave up on, once per stream sequence."""
        now = datetime.now(UTC)
        statement = insert(dead_letters).values(
            stream_seq=stream_seq,
            subject=subject,
            # Postgres text cannot hold NUL; the payload is kept for people to read.
            payload=payload.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            reason=reason,
            delivery_count=delivery_count,
            first_seen_at=now,
            last_seen_at=now,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[dead_letters.c.stream_seq],
            set_={
                "reason": statement.excluded.reason,
                "delivery_count": statement.excluded.delivery_count,
                "last_seen_at": statement.excluded.last_seen_at,
            },
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def count_dead_letters(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(dead_letters)) or 0)

    async def close(self) -> None:
        await self.engine.dispose()
