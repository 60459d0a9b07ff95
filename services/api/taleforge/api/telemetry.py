"""The API's telemetry: SDK set-up, SQL and publish spans, SSE clients connected.

The SDK is configured by the standard OTEL_* variables (nothing is exported while they are
unset). FastAPI traces its requests itself once a tracer provider is set (a SERVER span,
and spans for dependencies, endpoint and serialization; `untraced` leaves probes out). A
turn's trace starts there: the request's span is the parent of the publish span
FastStream's telemetry middleware opens, whose context travels in the event's headers to
the narrator.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from typing import Any

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import metrics
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.metrics import CallbackOptions, Observation

from taleforge.api.settings import Settings
from taleforge.api.streaming.sse import SSE_CLIENTS
from taleforge.contracts.log_format import configure_logging

SERVICE_NAME = "api"
# Probes would be most of the traces and say nothing.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz"})


def _sse_clients(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(SSE_CLIENTS.count)]


metrics.get_meter(__name__).create_observable_up_down_counter(
    "taleforge.sse.clients",
    callbacks=[_sse_clients],
    unit="{client}",
    description="Players connected to a turn's server-sent event stream now, in this process.",
)


def setup(settings: Settings) -> None:
    """Process set-up (from __main__): log lines, then the SDK as OTEL_* configure it."""
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    OpenTelemetryConfigurator().configure()  # type: ignore[no-untyped-call]


def instrument(app: FastAPI) -> FastAPI:
    """Spans for `app`'s SQL and its broker's publishes (FastAPI traces requests itself)."""
    # skip_dep_check: the package declares sqlalchemy < 2.1; its engine events work on 2.1.
    SQLAlchemyInstrumentor().instrument(engine=app.state.engine.sync_engine, skip_dep_check=True)
    app.state.bus.broker.add_middleware(NatsTelemetryMiddleware())
    return app


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's telemetry `exclude`: no spans or request metrics for probes."""
    return scope.get("path") in UNTRACED_PATHS
