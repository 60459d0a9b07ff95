"""`taleforge dev`'s trace sink and `taleforge trace`: spans exported over OTLP/HTTP by the
real SDK exporter land in the file, and the command draws the turn's trace as a waterfall."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from taleforge.cli.main import main
from taleforge.cli.trace_sink import TRACES_PATH, TraceSink


def export(endpoint: str, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint + TRACES_PATH)))
    return provider


def test_a_turn_exported_to_the_sink_prints_as_a_waterfall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces = tmp_path / "traces.jsonl"
    sink = TraceSink(traces)
    endpoint = sink.start()
    turn_id = str(uuid.uuid4())
    try:
        api, narrator = export(endpoint, "api"), export(endpoint, "narrator")
        with api.get_tracer("t").start_as_current_span("POST /api/story/progress") as request:
            with narrator.get_tracer("t").start_as_current_span(
                "process turn.requested",
                kind=SpanKind.CONSUMER,
                attributes={"taleforge.turn_id": turn_id},
            ):
                with narrator.get_tracer("t").start_as_current_span("chat gpt-4.1-mini") as call:
                    call.set_status(StatusCode.ERROR)
        with api.get_tracer("t").start_as_current_span("GET /api/sessions"):
            pass  # another trace: not the turn's
        api.shutdown()
        narrator.shutdown()
    finally:
        sink.stop()

    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == 4
    consumer = next(r for r in records if r["name"] == "process turn.requested")
    assert consumer["service"] == "narrator" and consumer["kind"] == "CONSUMER"
    assert consumer["attributes"]["taleforge.turn_id"] == turn_id

    assert main(["trace", turn_id, "--file", str(traces)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"trace {format(request.get_span_context().trace_id, '032x')}")
    body = lines[2:]
    assert len(body) == 3, "the other trace is not printed"
    assert "api" in body[0] and "  POST /api/story/progress" in body[0]
    assert "narrator" in body[1] and "    process turn.requested" in body[1]
    assert "      chat gpt-4.1-mini !" in body[2]  # an error is marked
    assert all(line.count("|") == 2 and "█" in line for line in body)

    assert main(["trace", str(uuid.uuid4()), "--file", str(traces)]) == 1
