"""Turning an ImageRequested into stored bytes and an ImageCompleted (or ImageFailed)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from taleforge.contracts import ImageCompleted, ImageFailed, ImageRequested, live_subject
from taleforge.illustrator.adapters.comfyui import ExecutionFailed, ProgressCallback, RenderedImage
from taleforge.illustrator.adapters.object_store import StoredImage, object_name
from taleforge.illustrator.settings import Settings
from taleforge.illustrator.workflows import fill_template, load_template

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SEED = 2**32 - 1


class Renderer(Protocol):
    async def render(
        self, workflow: dict[str, Any], *, on_progress: ProgressCallback | None = None
    ) -> RenderedImage: ...


class Store(Protocol):
    bucket: str

    async def put_image(
        self, name: str, data: bytes, *, width: int, height: int, content_type: str = ...
    ) -> StoredImage: ...


Publish = Callable[[ImageCompleted | ImageFailed], Awaitable[None]]
PublishLive = Callable[[str, bytes], Awaitable[None]]


def seed_for(request: ImageRequested) -> int:
    # A request without a seed still gets the same one on every redelivery.
    return request.seed if request.seed is not None else request.image_id.int % MAX_SEED


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header; rejects anything that is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ExecutionFailed("ComfyUI returned something that is not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def progress_message(request: ImageRequested, value: int, maximum: int) -> bytes:
    """The live-channel progress message (core NATS, not kept)."""
    return json.dumps(
        {
            "type": "image.progress",
            "session_id": str(request.session_id),
            "turn_id": str(request.turn_id),
            "image_id": str(request.image_id),
            "value": value,
            "max": maximum,
        }
    ).encode()


@dataclass
class Illustrator:
    settings: Settings
    comfyui: Renderer
    store: Store
    publish: Publish
    publish_live: PublishLive

    def __post_init__(self) -> None:
        self._template = load_template(self.settings.workflow)

    def workflow_for(self, request: ImageRequested) -> dict[str, Any]:
        s = self.settings
        negative = ", ".join(p for p in (request.negative_prompt, s.negative_prompt) if p)
        return fill_template(
            self._template,
            {
                "prompt": request.prompt,
                "negative_prompt": negative,
                "seed": seed_for(request),
                "width": request.width,
                "height": request.height,
                "steps": s.steps,
                "scale": s.cfg_scale,
                "sampler": s.sampler,
                "model": s.checkpoint,
            },
        )

    async def illustrate(self, request: ImageRequested) -> ImageCompleted:
        """Render, store and announce one image. Raises ComfyUIError when no image came."""
        subject = live_subject(request.session_id, request.turn_id)

        async def on_progress(value: int, maximum: int) -> None:
            await self.publish_live(subject, progress_message(request, value, maximum))

        rendered = await self.comfyui.render(self.workflow_for(request), on_progress=on_progress)
        width, height = png_size(rendered.data)
        stored = await self.store.put_image(
            object_name(request.session_id, request.image_id),
            rendered.data,
            width=width,
            height=height,
        )
        completed = ImageCompleted(
            event_id=uuid.uuid5(request.image_id, "image.completed"),
            session_id=request.session_id,
            user_id=request.user_id,
            turn_id=request.turn_id,
            image_id=request.image_id,
            bucket=stored.bucket,
            object_name=stored.object_name,
            content_type=stored.content_type,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            width=width,
            height=height,
            seed=seed_for(request),
        )
        await self.publish(completed)
        log.info(
            "image %s done: %s (%d bytes, ComfyUI prompt %s)",
            request.image_id,
            stored.object_name,
            stored.size_bytes,
            rendered.prompt_id,
        )
        return completed

    async def fail(self, request: ImageRequested, code: str, reason: str) -> ImageFailed:
        failed = ImageFailed(
            event_id=uuid.uuid5(request.image_id, "image.failed"),
            session_id=request.session_id,
            user_id=request.user_id,
            turn_id=request.turn_id,
            image_id=request.image_id,
            code=code,
            reason=reason,
        )
        await self.publish(failed)
        log.warning("image %s failed (%s): %s", request.image_id, code, reason)
        return failed
