"""A local OTLP/HTTP trace receiver for `taleforge dev`: every span, one JSON line each.

The services export exactly as they do in production (the SDK's OTLP exporter, HTTP and
protobuf); this receiver, in a thread of the dev process, appends each span to a JSON
Lines file (`.var/dev/traces.jsonl`) that `taleforge trace` reads. Metrics and logs sent
here are accepted and dropped. Development only: no auth, loopback only.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def span_records(request: ExportTraceServiceRequest) -> Iterator[dict[str, Any]]:
    """The request's spans as flat dicts: ids in hex, times in ns, the service by name."""
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    "service": resource.get("service.name", "?"),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "status": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                }


class TraceSink:
    """`start()` → the OTLP endpoint to export to; spans land in `path`."""

    def __init__(self, path: Path, *, port: int = 0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="trace-sink", daemon=True
        )
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        lines = "".join(json.dumps(record) + "\n" for record in span_records(request))
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(lines)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    if self.path == TRACES_PATH:
                        sink.write(body)
                except Exception as exc:  # a bad export must not take the dev stack down
                    self.send_error(400, f"unreadable OTLP export: {exc}")
                    return
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # one line per export would drown the services' logs

        return Handler


def dev_telemetry(env: dict[str, str], traces: Path, *, tracing: bool) -> TraceSink | None:
    """Set the services' environment for `taleforge dev`: readable logs, and traces exported
    over OTLP to a sink writing `traces` (started here), or the SDK off. Values already in
    `env` win, so a developer can export to their own collector instead."""
    env.setdefault("LOG_FORMAT", "text")
    env.setdefault("OTEL_METRICS_EXPORTER", "none")
    if not tracing:
        env["OTEL_SDK_DISABLED"] = "true"
        return None
    sink = TraceSink(traces)
    endpoint = sink.start()
    env.setdefault("OTEL_TRACES_EXPORTER", "otlp")
    env.setdefault("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    env.setdefault("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{endpoint}{TRACES_PATH}")
    env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")  # ms: a turn's spans land at once
    return sink
