"""The illustrator's telemetry: SDK set-up, a span and a duration for every ComfyUI render.

The SDK is configured by the standard OTEL_* variables (nothing is exported while they are
unset). ComfyUI's HTTP calls (queue, upload, history, view) are httpx spans under the
render's span, which also covers the wait for ComfyUI's websocket to say it is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.distro import OpenTelemetryConfigurator
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from taleforge.contracts.log_format import configure_logging
from taleforge.illustrator.adapters.comfyui import ProgressCallback, RenderedImage
from taleforge.illustrator.rendering import Renderer
from taleforge.illustrator.settings import Settings

SERVICE_NAME = "illustrator"

_tracer = trace.get_tracer(__name__)
_render_duration = metrics.get_meter(__name__).create_histogram(
    "taleforge.image.render.duration",
    unit="s",
    description="One render on ComfyUI, from queueing the workflow to having the image bytes.",
    explicit_bucket_boundaries_advisory=[0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300],
)


def setup(settings: Settings) -> None:
    """Process set-up (from __main__): log lines, the SDK from OTEL_*, httpx spans."""
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    OpenTelemetryConfigurator().configure()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()


class TracedRenderer:
    """A Renderer that reports each render: a span and its duration, by outcome."""

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer

    async def render(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        inputs: Mapping[str, bytes] | None = None,
    ) -> RenderedImage:
        started = time.monotonic()
        with _tracer.start_as_current_span(
            "comfyui render", attributes={"taleforge.workflow.nodes": len(workflow)}
        ) as span:
            try:
                rendered = await self._renderer.render(
                    workflow, on_progress=on_progress, inputs=inputs
                )
            except Exception as exc:
                code = str(getattr(exc, "code", type(exc).__qualname__))
                span.set_attribute("error.type", code)
                _render_duration.record(
                    time.monotonic() - started, {"outcome": "failed", "error.type": code}
                )
                raise
            span.set_attributes(
                {"comfyui.prompt_id": rendered.prompt_id, "comfyui.backend": rendered.backend}
            )
        _render_duration.record(time.monotonic() - started, {"outcome": "completed"})
        return rendered
