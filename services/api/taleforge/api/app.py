"""Composition root: build the FastAPI app and wire NATS, Postgres and the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from faststream.nats import NatsBroker
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taleforge.api.adapters.bus import BusUnavailable, EventBus
from taleforge.api.auth import KeysUnavailable, TokenVerifier, build_verifier
from taleforge.api.limits.turn_lock import LockUnavailable
from taleforge.api.limits.wiring import install_limits, open_limits
from taleforge.api.problems import install_problem_handlers
from taleforge.api.routes import admin, health, images, saves, scenarios, sessions, story, turns
from taleforge.api.routes.usage import router as usage_router
from taleforge.api.settings import Settings
from taleforge.api.streaming.feed import FeedUnavailable
from taleforge.api.telemetry import untraced
from taleforge.contracts import STREAM_NAME

log = logging.getLogger(__name__)

_DB_DOWN = "the database is unavailable; try again shortly"
_BUS_DOWN = "the event bus (NATS JetStream) is unavailable; try again shortly"
_KEYS_DOWN = "the auth server's signing keys (JWKS) are unavailable; try again shortly"


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_pre_ping=True,
        # A burst of turns each holds a connection for a few statements; with SQLAlchemy's
        # 5 kept (+10 overflow) most of a burst opened and closed new ones (TLS offer, auth,
        # a server process each). Kept + 10 overflow is the most per replica.
        pool_size=settings.db_pool_size,
        # Each statement sees what persistence has committed before it; `story_reads.poll`
        # polls inside one transaction and relies on that.
        isolation_level="READ COMMITTED",
        connect_args={"timeout": settings.db_connect_timeout_s},
    )


def create_broker(settings: Settings) -> NatsBroker:
    # A publisher only: no subscribers, so nothing to drain beyond in-flight publishes.
    return NatsBroker(settings.nats_url, max_reconnect_attempts=-1, graceful_timeout=10.0)


def _where(url: str) -> str:
    # Host and port only: a URL may carry credentials, which never go to the log.
    return ", ".join(urlsplit(part.strip()).netloc.rpartition("@")[2] for part in url.split(","))


async def _connect(broker: NatsBroker, settings: Settings) -> None:
    """Connect, saying that we wait; give up after API_NATS_CONNECT_TIMEOUT_S.

    Reconnects are unlimited once connected, and nats-py applies that to the first connect
    too: without a deadline a missing server would hang start-up silently.
    """
    where = _where(settings.nats_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.nats_connect_timeout_s
    starting = asyncio.ensure_future(broker.start())
    while not starting.done():
        await asyncio.wait({starting}, timeout=min(5.0, max(0.0, deadline - loop.time())))
        if starting.done():
            break
        if loop.time() >= deadline:
            starting.cancel()
            raise RuntimeError(
                f"NATS at {where} did not answer within {settings.nats_connect_timeout_s}s"
            )
        log.warning("waiting for NATS at %s", where)
    starting.result()
    log.info("connected to NATS at %s", where)


def create_app(
    settings: Settings | None = None,
    *,
    broker: NatsBroker | None = None,
    engine: AsyncEngine | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    """The API app. The lifespan connects `broker` and disposes `engine` (built if None)."""
    settings = settings or Settings()
    broker = broker or create_broker(settings)
    engine = engine or create_engine(settings)
    bus = EventBus(broker, publish_timeout_s=settings.publish_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _connect(broker, settings)
        if not await bus.wait_for_stream(settings.stream_wait_s):
            log.warning("stream %s still missing; publishes fail until it exists", STREAM_NAME)
        await open_limits(app.state, bus, settings)
        try:
            yield
        finally:
            await broker.stop()
            await engine.dispose()

    app = FastAPI(
        title="Taleforge API",
        version="0.1.0",
        lifespan=lifespan,
        description="Start story sessions, move the story on, read turns and images.",
        telemetry={"exclude": untraced},  # FastAPI's own spans; no probes
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.bus = bus
    app.state.verifier = verifier or build_verifier(settings)
    install_limits(app, settings)

    install_problem_handlers(
        app,
        unavailable={
            BusUnavailable: _BUS_DOWN,
            KeysUnavailable: _KEYS_DOWN,
            FeedUnavailable: _BUS_DOWN,
            LockUnavailable: _BUS_DOWN,
            OperationalError: _DB_DOWN,
            InterfaceError: _DB_DOWN,
            OSError: _DB_DOWN,
        },
    )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "Last-Event-ID",  # resuming a turn's stream
                "Prefer",  # respond-async / wait=N on POST /api/story/progress
            ],
            expose_headers=["ETag", "Location", "Retry-After"],
        )
    for router in (health.router, sessions.router, story.router, turns.router, images.router):
        app.include_router(router)
    for router in (usage_router,):
        app.include_router(router)
    for router in (scenarios.router, saves.router, admin.router):
        app.include_router(router)
    return app
