"""Composition root: broker, consumer workers, ComfyUI pool, templates, identities, storage."""

from __future__ import annotations

import logging
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker

from taleforge.contracts import ImageCompleted, ImageFailed, tracing
from taleforge.illustrator.adapters.bus import (
    character_descriptions,
    ensure_consumer,
    wait_for_stream,
)
from taleforge.illustrator.adapters.comfyui_pool import BackendPool
from taleforge.illustrator.adapters.consumer import PullWorkers
from taleforge.illustrator.adapters.exhausted import exhausted_requests
from taleforge.illustrator.adapters.object_store import ImageStore
from taleforge.illustrator.adapters.outcomes import image_outcomes
from taleforge.illustrator.adapters.supabase_storage import SupabaseImageStore
from taleforge.illustrator.handlers import render_image
from taleforge.illustrator.likeness import IdentityBook
from taleforge.illustrator.rendering import Illustrator, Renderer, Store
from taleforge.illustrator.settings import Settings
from taleforge.illustrator.telemetry import TracedRenderer
from taleforge.illustrator.templates import TemplateRegistry

log = logging.getLogger(__name__)


async def open_store(settings: Settings, js: Any) -> Store:
    if settings.storage == "supabase":
        return await SupabaseImageStore.open(
            settings.supabase_url, settings.supabase_service_key, settings.image_bucket
        )
    return await ImageStore.open(js, settings.image_bucket)


def create_app(
    settings: Settings | None = None,
    *,
    comfyui: Renderer | None = None,
    store: Store | None = None,
) -> FastStream:
    settings = settings or Settings()
    # The broker only holds the NATS connection and FastStream runs the life cycle: renders are
    # pulled by our own workers (adapters/consumer.py), which stop themselves gracefully.
    broker = NatsBroker(settings.nats_url)
    pool = BackendPool.from_urls(
        settings.backend_urls,
        timeout_s=settings.render_timeout_s,
        health_interval_s=settings.health_interval_s,
    )
    workers: PullWorkers | None = None
    image_store: Store | None = None

    async def start() -> None:
        nonlocal workers, image_store
        await broker.connect()
        nc = broker.connection
        js = nc.jetstream()
        await wait_for_stream(js)
        await ensure_consumer(
            js,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.max_ack_pending,
        )
        image_store = store or await open_store(settings, js)
        templates = await TemplateRegistry.open(
            js, settings.allowed_placeholders, settings.template_bucket
        )
        identities = await IdentityBook.open(
            js, character_descriptions(js), settings.identity_bucket
        )
        if comfyui is None:
            await pool.start()

        async def publish(event: ImageCompleted | ImageFailed) -> None:
            # Awaiting the PubAck: the event is durable only then. Msg-Id dedupes retries.
            with tracing.publishing(event) as headers:
                await js.publish(event.subject(), event.to_bytes(), headers=headers)

        async def publish_live(subject: str, data: bytes) -> None:
            await nc.publish(subject, data)

        illustrator = Illustrator(
            settings,
            TracedRenderer(comfyui or pool),
            image_store,
            publish,
            publish_live,
            templates,
            identities,
            image_outcomes(js),
        )
        # JetStream gave up on a request (killed on its last delivery, an outage): the
        # image fails for the player unless it already has an outcome.
        on_exhausted = exhausted_requests(js, illustrator)
        workers = PullWorkers(
            js,
            lambda msg: render_image(msg, illustrator, settings, on_exhausted),
            concurrency=settings.concurrency,
        )
        await workers.start()
        log.info(
            "illustrator ready: %d ComfyUI backend(s) %s, storage %s, concurrency %d",
            len(settings.backend_urls),
            ", ".join(settings.backend_urls),
            settings.storage,
            settings.concurrency,
        )

    async def stop_workers() -> None:
        if workers is not None:
            await workers.stop(settings.graceful_timeout_s)

    async def close_clients() -> None:
        await pool.aclose()
        if isinstance(image_store, SupabaseImageStore):
            await image_store.aclose()

    return FastStream(
        broker, on_startup=[start], on_shutdown=[stop_workers], after_shutdown=[close_clients]
    )
