"""Composition root: broker, consumer, ComfyUI client and image store, wired together."""

from __future__ import annotations

import logging

from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, PullSub

from taleforge.contracts import STREAM_NAME, ImageCompleted, ImageFailed, publish_headers
from taleforge.illustrator.adapters.bus import (
    CONSUMER_NAME,
    REQUEST_FILTER,
    ensure_consumer,
    wait_for_stream,
)
from taleforge.illustrator.adapters.comfyui import ComfyUIClient
from taleforge.illustrator.adapters.object_store import ImageStore
from taleforge.illustrator.handlers import bind_render_image
from taleforge.illustrator.rendering import Illustrator, Renderer, Store
from taleforge.illustrator.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    comfyui: Renderer | None = None,
    store: Store | None = None,
) -> FastStream:
    settings = settings or Settings()
    broker = NatsBroker(settings.nats_url, graceful_timeout=settings.graceful_timeout_s)
    wired: dict[str, Illustrator] = {}
    owned_client = ComfyUIClient(settings.comfyui_url, timeout_s=settings.render_timeout_s)

    async def start() -> None:
        await broker.connect()
        nc = broker.connection
        js = nc.jetstream()
        await wait_for_stream(js)
        await ensure_consumer(
            js,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.concurrency,
        )
        image_store = store or await ImageStore.open(js, settings.image_bucket)

        async def publish(event: ImageCompleted | ImageFailed) -> None:
            # Awaiting the PubAck: the event is durable only then. Msg-Id dedupes retries.
            await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))

        async def publish_live(subject: str, data: bytes) -> None:
            await nc.publish(subject, data)

        wired["illustrator"] = Illustrator(
            settings, comfyui or owned_client, image_store, publish, publish_live
        )
        log.info("illustrator ready: ComfyUI at %s", settings.comfyui_url)

    async def close_client() -> None:
        await owned_client.aclose()

    workers: int | None = settings.concurrency if settings.concurrency > 1 else None
    subscriber = broker.subscriber(
        REQUEST_FILTER,
        stream=JStream(STREAM_NAME, declare=False),
        durable=CONSUMER_NAME,
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,  # every outcome acks, naks or terms explicitly
        max_workers=workers,
    )
    subscriber(bind_render_image(lambda: wired["illustrator"], settings))
    return FastStream(broker, on_startup=[start], after_shutdown=[close_client])
