"""Requests per player per minute, counted across API replicas in a NATS key-value bucket.

Fixed one-minute windows: key `<user id>.<window number>`, value the count, incremented by
compare-and-set on the key's revision (a replica remembers the last revision it saw, so the
usual increment is one round trip). Until the bucket is open (or without NATS, as in unit
tests) counts are kept in this process. If NATS fails mid-way the request is let through:
a lost count is better than refusing every player while the bus is down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

BUCKET = "api_rate_limits"
WINDOW_S = 60
_CAS_TRIES = 5


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


async def open_bucket(js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
    return await js.create_key_value(
        KeyValueConfig(
            bucket=BUCKET,
            history=1,
            ttl=2 * WINDOW_S,  # a window's counter outlives it a little, then goes
            # File: a memory bucket is gone after a NATS server restart (limits off silently).
            storage=StorageType.FILE,
            replicas=replicas,
            description="Taleforge API: requests per player per minute",
        )
    )


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        *,
        kv: KeyValue | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.kv = kv
        self._clock = clock
        self._window = -1
        # key -> (count, revision) as last seen; revision 0 for counts kept here only.
        self._seen: dict[str, tuple[int, int]] = {}

    async def hit(self, user_id: UUID) -> Verdict:
        """Count one request of `user_id`; whether it is within the limit."""
        if self.per_minute <= 0:
            return Verdict(True, 0, 0, 0)
        now = self._clock()
        window = int(now // WINDOW_S)
        if window != self._window:
            self._window, self._seen = window, {}
        retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
        key = f"{user_id}.{window}"
        count = await self._increment(key)
        if count is None:
            return Verdict(True, self.per_minute, 0, retry_after)
        allowed = count <= self.per_minute
        return Verdict(allowed, self.per_minute, max(0, self.per_minute - count), retry_after)

    async def _increment(self, key: str) -> int | None:
        seen = self._seen.get(key)
        if seen is not None and seen[0] > self.per_minute:
            return seen[0]  # over already; counts only grow within a window
        if self.kv is None:
            count = (seen[0] if seen else 0) + 1
            self._seen[key] = (count, 0)
            return count
        try:
            for _ in range(_CAS_TRIES):
                count = (seen[0] if seen else 0) + 1
                try:
                    if seen is None:
                        revision = await self.kv.create(key, str(count).encode())
                    else:
                        revision = await self.kv.update(key, str(count).encode(), last=seen[1])
                except KeyWrongLastSequenceError:
                    seen = await self._read(key)
                    continue
                self._seen[key] = (count, revision)
                return count
        except (NatsError, TimeoutError, ValueError) as exc:
            log.warning("rate limit count failed (%r); letting the request through", exc)
            return None
        log.warning("rate limit count of %s stayed contended; letting the request through", key)
        return None

    async def _read(self, key: str) -> tuple[int, int] | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(key)
        except NotFoundError:
            return None
        return int((entry.value or b"0").decode() or 0), int(entry.revision or 0)
