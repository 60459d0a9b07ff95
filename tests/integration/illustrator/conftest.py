"""Shared set-up for the illustrator's integration tests: a ComfyUI sandbox and a harness.

Test modules are imported in importlib mode and cannot import this file, so the helpers
come as fixtures: `harness` (NATS and the illustrator) and `sandbox_prompts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    parse_event,
    publish_headers,
)
from taleforge.illustrator.app import create_app
from taleforge.illustrator.settings import Settings
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig
from taleforge.sandboxes.comfyui import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread


@pytest.fixture
def comfyui_url() -> Iterator[str]:
    with serve_in_thread(create_sandbox(ComfyUISandboxConfig(render_ms=80))) as url:
        yield url


@dataclass
class Harness:
    """The test's nats-server (with the STORY stream) and what tests do with an illustrator."""

    nats_url: str
    nc: Client
    js: JetStreamContext

    def settings(self, comfyui_url: str, **overrides: Any) -> Settings:
        """Settings for an illustrator on this NATS and the given ComfyUI, tuned for speed."""
        values: dict[str, Any] = {
            "nats_url": self.nats_url,
            "comfyui_url": comfyui_url,
            "checkpoint": "sandbox-v1.safetensors",
            "steps": 5,
            "ack_wait_s": 5,
            "max_deliver": 3,
            "retry_backoff_s": 0.1,
            "render_timeout_s": 10,
        }
        return Settings(**(values | overrides))

    @staticmethod
    @contextlib.asynccontextmanager
    async def running(settings: Settings) -> AsyncIterator[None]:
        """The illustrator service, started in-process."""
        app = create_app(settings)
        await app.start()
        try:
            yield
        finally:
            await app.stop()

    @staticmethod
    def request(**overrides: Any) -> ImageRequested:
        """A scene request of a fresh session and turn (ids as the narrator derives them)."""
        turn_id = uuid.uuid4()
        values: dict[str, Any] = {
            "session_id": uuid.uuid4(),
            "user_id": uuid.uuid4(),
            "turn_id": turn_id,
            "image_id": uuid.uuid5(turn_id, "image:scene"),
            "prompt": "a ruined abbey under a red moon",
            "width": 256,
            "height": 192,
        }
        return ImageRequested(**(values | overrides))

    async def outcome(self, request: ImageRequested) -> ImageCompleted | ImageFailed:
        """Publish the request and return the first image.completed / image.failed for it."""
        sub = await self.nc.subscribe(f"story.events.{request.session_id}.image.*")
        await self.js.publish(
            request.subject(), request.to_bytes(), headers=publish_headers(request)
        )
        try:
            async with asyncio.timeout(20):
                while True:
                    event = parse_event((await sub.next_msg(timeout=20)).data)
                    if isinstance(event, ImageCompleted | ImageFailed):
                        return event
        finally:
            await sub.unsubscribe()


@pytest.fixture
async def harness(nats_url: str) -> AsyncIterator[Harness]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    yield Harness(nats_url, nc, js)
    await nc.close()


async def _sandbox_prompts(comfyui_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=comfyui_url) as http:
        return list((await http.get("/_sandbox/prompts")).json())


@pytest.fixture
def sandbox_prompts() -> Callable[[str], Awaitable[list[dict[str, Any]]]]:
    """`await sandbox_prompts(url)`: every prompt that ComfyUI sandbox was sent, oldest first."""
    return _sandbox_prompts
