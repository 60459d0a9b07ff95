"""Composition root: the broker, the one durable consumer, and the repository behind it."""

from __future__ import annotations

import logging

from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, PullSub

from taleforge.contracts import STREAM_NAME, STREAM_SUBJECTS
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.bootstrap import declare_event_log, migrate_database
from taleforge.persistence.delivery import RetryPolicy
from taleforge.persistence.handlers import make_record_events
from taleforge.persistence.settings import Settings


def create_app(settings: Settings, *, repository: Repository | None = None) -> FastStream:
    repo = repository or Repository(
        create_engine(settings.database_url, pool_size=settings.persistence_db_pool_size)
    )
    policy = RetryPolicy(
        base_s=settings.persistence_retry_base_s,
        max_s=settings.persistence_retry_max_s,
        unexpected_error_attempts=settings.persistence_unexpected_error_attempts,
    )
    broker = NatsBroker(
        settings.nats_url,
        name="taleforge-persistence",
        graceful_timeout=settings.persistence_graceful_timeout_s,
        # FastStream's per-message lines at DEBUG; retries and dead letters are logged by us.
        log_level=logging.DEBUG,
    )
    # Binds to the durable consumer `declare_event_log` created (nats-py reuses an existing
    # one as is). Batches of up to PERSISTENCE_BATCH_SIZE (what is there, not waiting to
    # fill one), applied in one transaction; MANUAL acks: the handler settles each message.
    broker.subscriber(
        STREAM_SUBJECTS[0],
        stream=JStream(STREAM_NAME, declare=False),
        durable=settings.persistence_consumer,
        pull_sub=PullSub(batch_size=settings.persistence_batch_size, timeout=1.0, batch=True),
        ack_policy=AckPolicy.MANUAL,
    )(make_record_events(repo, policy))

    app = FastStream(broker)

    @app.on_startup
    async def prepare() -> None:
        if settings.persistence_migrate_on_start:
            await migrate_database(settings)
        await declare_event_log(settings)

    @app.after_shutdown
    async def close() -> None:
        await repo.close()

    return app
