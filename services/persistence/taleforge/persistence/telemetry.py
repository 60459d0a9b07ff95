"""Persistence's telemetry: SDK set-up, SQL spans, and the event log's health as metrics.

The SDK is configured by the standard OTEL_* variables (nothing is exported while they are
unset). As the owner of the STORY stream, persistence also reports on every durable
consumer of it: how far each lags behind (pending, and delivered but unacknowledged) and
how many messages each gave up on (dead letters: the server's MAX_DELIVERIES and
MSG_TERMINATED advisories, counted once across replicas through a queue group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import metrics
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.ext.asyncio import AsyncEngine

from taleforge.contracts import STREAM_NAME
from taleforge.contracts.log_format import configure_logging
from taleforge.persistence.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "persistence"
LAG_INTERVAL_S = 5.0
CONSUMER = "messaging.consumer.group.name"
# Advisory kind → the `reason` of the dead letter.
DEAD_LETTER_ADVISORIES = {"MAX_DELIVERIES": "max_deliveries", "MSG_TERMINATED": "terminated"}

_meter = metrics.get_meter(__name__)
_dead_letters = _meter.create_counter(
    "taleforge.dead_letters",
    unit="{message}",
    description="Messages a consumer gave up on: out of deliveries, or terminated.",
)
# consumer → (pending, ack_pending), as last read from the server.
_lag: dict[str, tuple[int, int]] = {}


def _observe(index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lag[index], {CONSUMER: name}) for name, lag in _lag.items()]

    return observe


_meter.create_observable_gauge(
    "taleforge.consumer.pending",
    callbacks=[_observe(0)],
    unit="{message}",
    description="Messages a durable consumer has not been delivered yet (its lag).",
)
_meter.create_observable_gauge(
    "taleforge.consumer.ack_pending",
    callbacks=[_observe(1)],
    unit="{message}",
    description="Messages delivered to a durable consumer and not acknowledged yet.",
)


def setup(settings: Settings) -> None:
    """Process set-up (from __main__): log lines, then the SDK as OTEL_* configure it."""
    configure_logging(settings.persistence_log_level, settings.log_format)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    OpenTelemetryConfigurator().configure()  # type: ignore[no-untyped-call]


def instrument(app: FastStream, engine: AsyncEngine) -> None:
    """SQL spans for `engine`; the consumers' lag and dead letters watched while `app` runs."""
    # skip_dep_check: the package declares sqlalchemy < 2.1; its engine events work on 2.1.
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
    watcher = EventLogWatcher()

    async def start() -> None:
        assert isinstance(app.broker, NatsBroker)
        await watcher.start(app.broker.connection)

    app.after_startup(start)
    app.on_shutdown(watcher.stop)


class EventLogWatcher:
    def __init__(self, interval_s: float = LAG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Client) -> None:
        for kind in DEAD_LETTER_ADVISORIES:
            subject = f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{STREAM_NAME}.*"
            self._subs.append(await nc.subscribe(subject, "persistence-metrics", cb=self._advised))
        self._task = asyncio.create_task(self._poll(nc), name="consumer lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _advised(self, msg: Msg) -> None:
        kind, consumer = msg.subject.split(".")[4], msg.subject.rsplit(".", 1)[-1]
        try:
            seq = json.loads(msg.data).get("stream_seq")
        except ValueError:
            seq = None
        log.info("dead letter: consumer %s, %s, stream seq %s", consumer, kind, seq)
        _dead_letters.add(1, {CONSUMER: consumer, "reason": DEAD_LETTER_ADVISORIES[kind]})

    async def _poll(self, nc: Client) -> None:
        js = nc.jetstream()
        while True:
            try:
                infos = await js.consumers_info(STREAM_NAME)
                _lag.clear()
                _lag.update(
                    {
                        info.name: (info.num_pending or 0, info.num_ack_pending or 0)
                        for info in infos
                        if info.config.durable_name
                    }
                )
            except Exception as exc:  # NATS away for a moment: the gauges keep the last values
                log.debug("could not read consumer lag: %r", exc)
            await asyncio.sleep(self.interval_s)
