"""Turning an ImageRequested into stored bytes and an ImageCompleted (or ImageFailed)."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageKind,
    ImageRequested,
    live_subject,
)
from taleforge.illustrator.adapters.comfyui import ExecutionFailed, ProgressCallback, RenderedImage
from taleforge.illustrator.adapters.comfyui_progress import RenderProgress
from taleforge.illustrator.adapters.object_store import StoredImage, object_name
from taleforge.illustrator.adapters.outcomes import OutcomeLookup
from taleforge.illustrator.likeness import Identity, IdentityBook
from taleforge.illustrator.settings import Settings
from taleforge.illustrator.templates import Template, TemplateRegistry
from taleforge.illustrator.workflows import (
    REFERENCE_IMAGE,
    WorkflowError,
    fill_template,
    placeholders_in,
)

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SEED = 2**32 - 1


class Renderer(Protocol):
    async def render(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        inputs: Mapping[str, bytes] | None = None,
    ) -> RenderedImage: ...


class Store(Protocol):
    bucket: str

    async def put_image(
        self, name: str, data: bytes, *, width: int, height: int, content_type: str = ...
    ) -> StoredImage: ...

    async def get_image(self, name: str) -> bytes: ...


Publish = Callable[[ImageCompleted | ImageFailed], Awaitable[None]]
PublishLive = Callable[[str, bytes], Awaitable[None]]


def seed_for(request: ImageRequested, identities: Sequence[Identity] = ()) -> int:
    """The request's seed, else the first character's pinned one, else one from the image id.

    Derived seeds are the same on every redelivery, so a retried image is the same image.
    """
    if request.seed is not None:
        return request.seed
    if identities:
        return identities[0].seed
    return request.image_id.int % MAX_SEED


def prompt_with_likeness(prompt: str, identities: Sequence[Identity]) -> str:
    """Each character's fixed description first, so they look alike in every picture."""
    return ", ".join([*(i.prefix for i in identities), prompt])


def reference_name(data: bytes) -> str:
    # Named by content: the same reference uploads under the same name on every server.
    return f"taleforge_ref_{hashlib.sha256(data).hexdigest()[:20]}.png"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header; rejects anything that is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ExecutionFailed("ComfyUI returned something that is not a PNG image")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def progress_message(request: ImageRequested, progress: RenderProgress) -> bytes:
    """The live-channel progress message (core NATS, not kept): overall value of max."""
    return json.dumps(
        {
            "type": "image.progress",
            "session_id": str(request.session_id),
            "turn_id": str(request.turn_id),
            "image_id": str(request.image_id),
            "value": progress.value,
            "max": progress.max,
            "nodes_done": progress.nodes_done,
            "nodes_total": progress.nodes_total,
        }
    ).encode()


@dataclass
class ForwardOnly:
    """Lets progress through only when it moves on: a player's bar must never go back.

    A render re-dispatched to another ComfyUI starts again from 0; the bar waits until the
    new run has caught up instead of jumping back.
    """

    last: RenderProgress | None = None

    def admits(self, progress: RenderProgress) -> bool:
        last = self.last
        if last is not None and (
            progress == last or progress.value < last.value or progress.nodes_done < last.nodes_done
        ):
            return False
        self.last = progress
        return True


@dataclass
class Prepared:
    template: Template
    workflow: dict[str, Any]
    seed: int
    identities: list[Identity]
    inputs: dict[str, bytes]


@dataclass
class Illustrator:
    settings: Settings
    comfyui: Renderer
    store: Store
    publish: Publish
    publish_live: PublishLive
    templates: TemplateRegistry
    identities: IdentityBook
    # Looks the image's outcome up on the stream before a failure is published (None: never).
    outcome: OutcomeLookup | None = None

    async def _identities(self, request: ImageRequested) -> list[Identity]:
        return [
            await self.identities.identity_for(request.session_id, n) for n in request.characters
        ]

    async def _reference(self, identities: list[Identity]) -> tuple[str, bytes]:
        for identity in identities:
            if identity.reference_image:
                data = await self.store.get_image(identity.reference_image)
                return reference_name(data), data
        names = ", ".join(i.name for i in identities) or "no character"
        raise WorkflowError(
            f"the template takes %{REFERENCE_IMAGE}% but {names} has no reference image yet "
            "(the first portrait of a character alone becomes its reference)"
        )

    async def prepare(self, request: ImageRequested) -> Prepared:
        """Template, identities, seed and inputs for one request: everything but the render."""
        s = self.settings
        template = await self.templates.get(request.kind.value)
        identities = await self._identities(request)
        seed = seed_for(request, identities)
        negative = ", ".join(p for p in (request.negative_prompt, s.negative_prompt) if p)
        values: dict[str, Any] = {
            **s.placeholders,
            "prompt": prompt_with_likeness(request.prompt, identities),
            "negative_prompt": negative,
            "seed": seed,
            "width": request.width,
            "height": request.height,
            "steps": s.steps,
            "scale": s.cfg_scale,
            "sampler": s.sampler,
            "model": s.checkpoint,
        }
        used = placeholders_in(template.workflow)
        inputs: dict[str, bytes] = {}
        if REFERENCE_IMAGE in used:
            name, data = await self._reference(identities)
            values[REFERENCE_IMAGE] = name
            inputs[name] = data
        values = {k: v for k, v in values.items() if k in used}
        workflow = fill_template(template.workflow, values, allowed=s.allowed_placeholders)
        return Prepared(template, workflow, seed, identities, inputs)

    async def illustrate(self, request: ImageRequested) -> ImageCompleted:
        """Render, store and announce one image. Raises ComfyUIError when no image came."""
        subject = live_subject(request.session_id, request.turn_id)

        forward = ForwardOnly()

        async def on_progress(progress: RenderProgress) -> None:
            if forward.admits(progress):
                await self.publish_live(subject, progress_message(request, progress))

        job = await self.prepare(request)
        rendered = await self.comfyui.render(
            job.workflow, on_progress=on_progress, inputs=job.inputs or None
        )
        width, height = png_size(rendered.data)
        stored = await self.store.put_image(
            object_name(request.session_id, request.image_id),
            rendered.data,
            width=width,
            height=height,
        )
        identities = job.identities
        if (
            request.kind is ImageKind.PORTRAIT
            and len(identities) == 1
            and not identities[0].reference_image
        ):
            await self.identities.set_reference(identities[0], stored.object_name)
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
            seed=job.seed,
            template=job.template.kind,
            template_version=job.template.version,
            characters=[i.likeness() for i in identities],
        )
        await self.publish(completed)
        log.info(
            "image %s done: %s (%d bytes, %s template v%d, ComfyUI prompt %s on %s)",
            request.image_id,
            stored.object_name,
            stored.size_bytes,
            job.template.kind,
            job.template.version,
            rendered.prompt_id,
            rendered.backend,
        )
        return completed

    async def fail(
        self, request: ImageRequested, code: str, reason: str, request_seq: int | None = None
    ) -> ImageFailed | None:
        """Publish the image's ImageFailed, unless it already has an outcome (None then)."""
        if self.outcome is not None:
            existing = await self.outcome(request)
            if existing is not None:
                log.info("image %s already has %s; no image.failed", request.image_id, existing)
                return None
        failed = ImageFailed(
            event_id=uuid.uuid5(request.image_id, "image.failed"),
            session_id=request.session_id,
            user_id=request.user_id,
            turn_id=request.turn_id,
            image_id=request.image_id,
            code=code,
            reason=reason,
            request_seq=request_seq,
        )
        await self.publish(failed)
        log.warning("image %s failed (%s): %s", request.image_id, code, reason)
        return failed
