"""Composition root: the NATS connection, the one durable consumer, and the repository."""

from __future__ import annotations

from faststream import FastStream
from faststream.nats import NatsBroker

from taleforge.persistence.adapters.advisories import AdvisoryTranslator
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.bootstrap import declare_event_log, migrate_database
from taleforge.persistence.consumer import EventConsumer
from taleforge.persistence.delivery import RetryPolicy
from taleforge.persistence.settings import Settings


def create_app(settings: Settings, *, repository: Repository | None = None) -> FastStream:
    repo = repository or Repository(create_engine(settings.database_url))
    policy = RetryPolicy(
        base_s=settings.persistence_retry_base_s,
        max_s=settings.persistence_retry_max_s,
        unexpected_error_attempts=settings.persistence_unexpected_error_attempts,
    )
    # Only the connection (and FastStream's lifecycle): the consumer below is our own pull
    # loop, so there are no subscribers for a broker graceful_timeout or log level to govern.
    # Reconnect for ever: a client that gives up stays closed, and the loop could never fetch.
    broker = NatsBroker(settings.nats_url, name="taleforge-persistence", max_reconnect_attempts=-1)
    # Binds to the durable consumer `declare_event_log` created. Batches of up to
    # PERSISTENCE_BATCH_SIZE (what is waiting, not waiting for more), each applied in one
    # transaction; every message is acked, termed or naked explicitly.
    consumer = EventConsumer(
        repo,
        policy,
        durable=settings.persistence_consumer,
        batch_size=settings.persistence_batch_size,
    )
    app = FastStream(broker)
    advisories: list[AdvisoryTranslator] = []

    @app.on_startup
    async def prepare() -> None:
        if settings.persistence_migrate_on_start:
            await migrate_database(settings)
        await declare_event_log(settings)

    @app.after_startup
    async def consume() -> None:
        js = broker.connection.jetstream()
        await consumer.start(js)
        # MAX_DELIVERIES advisories (ADVISORIES stream) become delivery.exhausted events.
        translator = AdvisoryTranslator(js)
        await translator.start()
        advisories.append(translator)

    @app.on_shutdown
    async def drain() -> None:
        while advisories:
            await advisories.pop().stop()
        await consumer.stop(settings.persistence_graceful_timeout_s)

    @app.after_shutdown
    async def close() -> None:
        await repo.close()

    return app
