"""One trace per turn: the four services' apps in this process, real NATS and Postgres, both
sandboxes, spans kept in memory. And a service process's Prometheus endpoint and JSON logs.

The SDK's tracer and meter providers are process-global and can be set once: this module
sets them, and stops its exporter afterwards, so later tests only make spans nobody keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from taleforge.api import telemetry as api_telemetry
from taleforge.api.app import create_app as create_api
from taleforge.api.auth import issue_token
from taleforge.api.settings import DEV_JWT_SECRET
from taleforge.api.settings import Settings as ApiSettings
from taleforge.cli.embedded import free_port
from taleforge.contracts.log_format import JsonFormatter
from taleforge.contracts.tracing import TURN_ID
from taleforge.illustrator.app import create_app as create_illustrator
from taleforge.illustrator.settings import Settings as IllustratorSettings
from taleforge.narrator.app import create_app as create_narrator
from taleforge.narrator.settings import Settings as NarratorSettings
from taleforge.persistence import telemetry as persistence_telemetry
from taleforge.persistence.adapters.repository import Repository, create_engine
from taleforge.persistence.app import create_app as create_persistence
from taleforge.persistence.settings import Settings as PersistenceSettings
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig
from taleforge.sandboxes.comfyui import create_app as create_comfyui
from taleforge.sandboxes.openai import create_app as create_openai
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def metric_reader() -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    assert metrics.get_meter_provider() is provider, "another test set a meter provider first"
    return reader


@pytest.fixture(scope="module")
def exporter(metric_reader: InMemoryMetricReader) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set a tracer provider first"
    # As the narrator (OpenAI's SDK: httpx2) and the illustrator (ComfyUI: httpx) do.
    HTTPXClientInstrumentor().instrument()
    HTTPX2ClientInstrumentor().instrument()
    yield exporter
    HTTPXClientInstrumentor().uninstrument()
    HTTPX2ClientInstrumentor().uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    exporter.shutdown()


@pytest.fixture
def sandboxes() -> Iterator[tuple[str, str]]:
    with (
        serve_in_thread(create_openai()) as openai_url,
        serve_in_thread(create_comfyui(ComfyUISandboxConfig(render_ms=20))) as comfyui_url,
    ):
        # A picture with every beat, so the trace reaches the illustrator.
        httpx.put(f"{openai_url}/_sandbox/faults", json={"illustrate": "always"}).raise_for_status()
        yield openai_url, comfyui_url


@contextlib.asynccontextmanager
async def four_services(
    nats_url: str, database_url: str, openai_url: str, comfyui_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """Persistence, narrator, illustrator and the API, wired as each __main__ wires them."""
    settings = PersistenceSettings(
        nats_url=nats_url, database_url=database_url, persistence_migrate_on_start=False
    )
    repository = Repository(create_engine(database_url))
    persistence = create_persistence(settings, repository=repository)
    persistence_telemetry.instrument(persistence, repository.engine)
    narrator = create_narrator(
        NarratorSettings(nats_url=nats_url, openai_base_url=f"{openai_url}/v1", ack_wait_s=10)
    )
    illustrator = create_illustrator(
        IllustratorSettings(
            nats_url=nats_url, comfyui_url=comfyui_url, checkpoint="sandbox-v1.safetensors"
        )
    )
    api = api_telemetry.instrument(
        create_api(ApiSettings(nats_url=nats_url, database_url=database_url))
    )
    async with contextlib.AsyncExitStack() as stack:
        for worker in (persistence, narrator, illustrator):
            await worker.start()
            stack.push_async_callback(worker.stop)
        await stack.enter_async_context(api.router.lifespan_context(api))
        transport = httpx.ASGITransport(app=api)
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30)
        )


async def play_one_turn(http: httpx.AsyncClient) -> str:
    """Start a session, ask for a turn, wait until it and its picture are done; the turn id."""
    http.headers["Authorization"] = f"Bearer {issue_token(uuid.uuid4(), secret=DEV_JWT_SECRET)}"
    created = await http.post("/api/sessions", json={})
    assert created.status_code in (201, 202), created.text
    session_id = created.json()["session_id"]
    async with asyncio.timeout(60):
        while True:
            accepted = await http.post(
                "/api/story/progress",
                json={"session_id": session_id, "input_type": "action", "text": "I look up."},
                headers={"Prefer": "respond-async"},
            )
            if accepted.status_code in (200, 202):
                break
            assert accepted.status_code == 404, accepted.text  # until the session is projected
            await asyncio.sleep(0.05)
        turn_id = str(accepted.json()["turn_id"])
        while True:
            turn = await http.get(f"/api/turns/{turn_id}")
            body = turn.json() if turn.status_code == 200 else {}
            images = body.get("images") or []
            if body.get("status") == "completed" and images and images[0]["status"] != "pending":
                return turn_id
            assert body.get("status") != "failed", body
            await asyncio.sleep(0.05)


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _one(spans: list[ReadableSpan], **match: Any) -> ReadableSpan:
    found = [s for s in spans if all((s.attributes or {}).get(k) == v for k, v in match.items())]
    assert found, f"no span with {match}: {[s.name for s in spans]}"
    return found[0]


async def test_one_turn_is_one_trace_across_the_four_services(
    exporter: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
    nats_url: str,
    migrated_database_url: str,
    sandboxes: tuple[str, str],
) -> None:
    log_lines = io.StringIO()
    handler = logging.StreamHandler(log_lines)
    handler.setFormatter(JsonFormatter())
    narrator_log = logging.getLogger("taleforge.narrator")
    narrator_log.addHandler(handler)
    narrator_log.setLevel(logging.INFO)
    try:
        async with four_services(nats_url, migrated_database_url, *sandboxes) as http:
            turn_id = await play_one_turn(http)
            await asyncio.sleep(0)  # spans end as their handlers return
    finally:
        narrator_log.removeHandler(handler)

    spans = list(exporter.get_finished_spans())
    traces = {s.context.trace_id for s in spans if (s.attributes or {}).get(TURN_ID) == turn_id}
    assert len(traces) == 1, "every span naming the turn is in one trace"
    trace_id = traces.pop()
    turn = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in turn}

    # API: the HTTP request is the root; FastStream's publish span is under it.
    [root] = [s for s in turn if s.parent is None]
    assert root.kind is SpanKind.SERVER and root.name == "POST /api/story/progress"
    publish = next(s for s in turn if s.kind is SpanKind.PRODUCER and root in _ancestors(s, by_id))
    # Narrator: consumes the request under that publish, calls the model, publishes the picture.
    narrate = _one(turn, **{"messaging.consumer.group.name": "narrator"})
    assert narrate.kind is SpanKind.CONSUMER and publish in _ancestors(narrate, by_id)
    model = next(s for s in turn if s.name.startswith("chat "))
    assert narrate in _ancestors(model, by_id)
    attributes = model.attributes or {}
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4.1-mini"
    assert attributes["gen_ai.response.model"]
    assert int(attributes["gen_ai.usage.input_tokens"]) > 0  # type: ignore[arg-type]
    assert int(attributes["gen_ai.usage.output_tokens"]) > 0  # type: ignore[arg-type]
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert any(model in _ancestors(s, by_id) for s in turn if s.kind is SpanKind.CLIENT)
    asked = _one(
        turn, **{"taleforge.event_type": "image.requested"}, **{"messaging.operation.type": "send"}
    )
    assert narrate in _ancestors(asked, by_id)
    # Illustrator: consumes that request, renders on ComfyUI (HTTP calls under the render).
    draw = _one(turn, **{"messaging.consumer.group.name": "illustrator"})
    assert draw.parent is not None and draw.parent.span_id == asked.context.span_id
    render = next(s for s in turn if s.name == "comfyui render")
    assert draw in _ancestors(render, by_id)
    assert any(render in _ancestors(s, by_id) for s in turn if s.kind is SpanKind.CLIENT)
    # Persistence: every event of the turn recorded under its publisher's span.
    recorded = {
        (s.attributes or {}).get("taleforge.event_type")
        for s in turn
        if (s.attributes or {}).get("messaging.consumer.group.name") == "persistence"
    }
    assert {"turn.requested", "narration.completed", "image.completed"} <= recorded
    for span in turn:
        if span.parent is not None and span.parent.span_id in by_id:
            assert span.start_time >= by_id[span.parent.span_id].start_time  # type: ignore[operator]

    # A narrator log line of the turn names the same trace.
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    narrated = [line for line in lines if line["message"].startswith(f"narrated turn {turn_id}")]
    assert narrated and narrated[0]["trace_id"] == format(trace_id, "032x")
    assert narrated[0]["turn_id"] == turn_id

    # The turn's metrics were recorded.
    data = metric_reader.get_metrics_data()
    assert data is not None
    recorded_metrics = {
        metric.name
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {
        "taleforge.turn.duration",
        "taleforge.narration.time_to_first_token",
        "taleforge.narrator.tokens",
        "taleforge.narrator.cost",
        "taleforge.image.render.duration",
        "taleforge.consumer.pending",
        "taleforge.sse.clients",
    } <= recorded_metrics


async def test_a_service_serves_prometheus_metrics_and_logs_json(
    nats_url: str, migrated_database_url: str
) -> None:
    """Persistence as a process, configured as compose configures it (OTEL_* variables)."""
    port = free_port()
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "DATABASE_URL": migrated_database_url,
        "PERSISTENCE_MIGRATE_ON_START": "false",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "taleforge.persistence"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lag = 'taleforge_consumer_pending{messaging_consumer_group_name="persistence",'
    try:
        async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(60):
            while True:
                assert service.poll() is None, "persistence exited"
                with contextlib.suppress(httpx.HTTPError):
                    scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
                    if lag in scraped.text:
                        break
                await asyncio.sleep(0.2)
    finally:
        service.terminate()
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["logger"] == "taleforge.persistence.consumer" for line in lines), stderr
