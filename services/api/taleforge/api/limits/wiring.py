"""Putting the limits on an app: built empty with it, their NATS buckets opened once NATS is
connected (in the lifespan)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from nats.errors import Error as NatsError

from taleforge.api.adapters.bus import EventBus
from taleforge.api.limits import rate, turn_lock
from taleforge.api.limits.body_size import BodySizeLimit
from taleforge.api.limits.rate import RateLimiter
from taleforge.api.settings import Settings

log = logging.getLogger(__name__)


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Before start-up: the body size limit; rate counts kept in this process and no turn
    locks (turns get 503) until `open_limits`."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_min)
    app.state.turn_locks = None


async def open_limits(state: Any, bus: EventBus, settings: Settings) -> None:
    """After NATS is connected: counts and locks shared by every replica."""
    js = bus.js
    try:
        locks = await turn_lock.open_bucket(
            js, ttl_s=settings.turn_lock_ttl_s, replicas=settings.kv_replicas
        )
        state.turn_locks = turn_lock.TurnLocks(locks, js)
    except turn_lock.LockUnavailable as exc:
        log.warning("turn locks unavailable (turns answer 503 until restart): %s", exc)
    try:
        state.rate_limiter.kv = await rate.open_bucket(js, replicas=settings.kv_replicas)
    except (NatsError, TimeoutError) as exc:
        log.warning("rate limits counted per replica (KV bucket unavailable): %r", exc)
