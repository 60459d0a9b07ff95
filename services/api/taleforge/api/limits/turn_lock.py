"""One turn in flight per session, across every API replica: a NATS key-value lock.

The key is the session, the value the turn holding it. The bucket's TTL frees a lock nobody
released (a replica died, the narrator is down), so a session can never stay wedged. A lock
is released when the turn's outcome is seen (by the stream or wait that follows it), and a
lock found taken is checked against the STORY stream: if its turn already has an outcome,
the lock is stale and taken over (compare-and-set on its revision, so two replicas cannot
both take it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from taleforge.contracts import (
    STREAM_NAME,
    InvalidEvent,
    NarrationCompleted,
    TurnFailed,
    events_filter,
    parse_event,
)

log = logging.getLogger(__name__)

BUCKET = "api_turn_locks"


class LockUnavailable(Exception):
    """The lock bucket could not be used (NATS down)."""


@dataclass(frozen=True, slots=True)
class Acquired:
    turn_id: UUID
    revision: int


@dataclass(frozen=True, slots=True)
class Busy:
    """Another turn of the session is in flight."""

    turn_id: UUID


async def open_bucket(js: JetStreamContext, *, ttl_s: float, replicas: int = 1) -> KeyValue:
    # Created by the API itself: only the API uses it. Same config from every replica, so
    # concurrent creates agree. File storage: a memory bucket is gone after a NATS server
    # restart, and every turn would answer 503 until the API itself restarted.
    config = KeyValueConfig(
        bucket=BUCKET,
        history=1,
        ttl=ttl_s,
        storage=StorageType.FILE,
        replicas=replicas,
        description="Taleforge API: the turn in flight per session (key = session id)",
    )
    try:
        return await js.create_key_value(config)
    except (NatsError, TimeoutError) as exc:
        raise LockUnavailable(f"cannot open KV bucket {BUCKET}: {exc!r}") from exc


class TurnLocks:
    def __init__(self, kv: KeyValue, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js

    async def acquire(self, session_id: UUID, turn_id: UUID) -> Acquired | Busy:
        key, value = str(session_id), str(turn_id).encode()
        try:
            try:
                return Acquired(turn_id, await self._kv.create(key, value))
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._kv.get(key)
            except NotFoundError:  # released (or expired) in between: try once more
                return Acquired(turn_id, await self._kv.create(key, value))
            holder = UUID((entry.value or b"").decode())
            revision = int(entry.revision or 0)
            if holder == turn_id:
                # The same turn again (an Idempotency-Key retry): it already holds the lock.
                return Acquired(turn_id, revision)
            if not await self._has_outcome(session_id, holder):
                return Busy(holder)
            log.info("session %s: turn %s is over; its lock was stale", session_id, holder)
            return Acquired(turn_id, await self._kv.update(key, value, last=revision))
        except KeyWrongLastSequenceError:
            # Another replica took the lock in the same instant.
            entry = await self._kv.get(key)
            return Busy(UUID((entry.value or b"").decode()))
        except (NatsError, TimeoutError, ValueError) as exc:
            raise LockUnavailable(f"turn lock of session {session_id}: {exc!r}") from exc

    async def release(self, session_id: UUID, turn_id: UUID) -> None:
        """Free the session's lock if `turn_id` still holds it (never someone else's)."""
        key = str(session_id)
        try:
            entry = await self._kv.get(key)
            if (entry.value or b"").decode() != str(turn_id):
                return
            await self._kv.delete(key, last=entry.revision)
        except (NotFoundError, KeyWrongLastSequenceError):
            return
        except (NatsError, TimeoutError) as exc:
            # Not fatal: the next turn sees the outcome on the stream, or the TTL frees it.
            log.warning("could not release the lock of session %s: %r", session_id, exc)

    async def _has_outcome(self, session_id: UUID, turn_id: UUID) -> bool:
        """Whether the session's last outcome on STORY is `turn_id`'s (so it is over)."""
        for event_type in (NarrationCompleted.TYPE, TurnFailed.TYPE):
            try:
                raw = await self._js.get_last_msg(
                    STREAM_NAME, events_filter(session_id, event_type)
                )
            except NotFoundError:
                continue
            try:
                event = parse_event(raw.data or b"")
            except InvalidEvent:
                continue
            if event.turn_id == turn_id:
                return True
        return False
