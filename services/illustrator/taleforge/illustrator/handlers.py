"""The bus handler: one ImageRequested in, an ack/nak/term decision out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.msg import Msg

from taleforge.contracts import DeliveryExhausted, ImageRequested, InvalidEvent, parse_event
from taleforge.illustrator.adapters.comfyui import ComfyUIError
from taleforge.illustrator.rendering import Illustrator
from taleforge.illustrator.settings import Settings
from taleforge.illustrator.workflows import WorkflowError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


@contextlib.asynccontextmanager
async def heartbeats(msg: Msg, every_s: float) -> AsyncIterator[None]:
    """Tell JetStream we are still working, so a long render is not redelivered."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def backoff_s(settings: Settings, attempt: int) -> float:
    return float(min(settings.retry_backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))


async def render_image(
    msg: Msg,
    illustrator: Illustrator,
    settings: Settings,
    on_exhausted: Callable[[DeliveryExhausted], Awaitable[None]] | None = None,
) -> None:
    try:
        request = parse_event(msg.data)
        if isinstance(request, DeliveryExhausted) and on_exhausted is not None:
            await exhausted(msg, request, on_exhausted, settings)
            return
        if not isinstance(request, ImageRequested):
            raise InvalidEvent(f"expected image.requested, got {request.type}")
    except InvalidEvent as exc:
        meta = msg.metadata
        log.error(
            "terminating malformed message %s (stream seq %d): %s",
            msg.subject,
            meta.sequence.stream,
            exc.reason,
        )
        await msg.term()  # term: never redelivered, never crash-looped
        return
    attempt = msg.metadata.num_delivered or 1
    async with heartbeats(msg, settings.ack_wait_s / 3):
        try:
            await illustrator.illustrate(request)
            await msg.ack()
            return
        except ComfyUIError as exc:
            transient, code, reason = exc.transient, exc.code, exc.reason
        except WorkflowError as exc:
            transient, code, reason = False, "workflow_template", str(exc)
        except Exception as exc:  # bus or store trouble: retry, then give up readably
            log.exception("image %s attempt %d crashed", request.image_id, attempt)
            transient, code, reason = True, "internal_error", f"{type(exc).__name__}: {exc}"
    if transient and attempt < settings.max_deliver:
        delay = backoff_s(settings, attempt)
        log.warning(
            "image %s attempt %d/%d failed (%s: %s); retry in %.1fs",
            request.image_id,
            attempt,
            settings.max_deliver,
            code,
            reason,
            delay,
        )
        await msg.nak(delay=delay)
        return
    if transient:
        code, reason = "max_deliveries", f"gave up after {attempt} attempts: {reason}"
    try:
        await illustrator.fail(request, code, reason, msg.metadata.sequence.stream)
    except Exception:
        log.exception("could not publish image.failed for %s; will retry", request.image_id)
        await msg.nak(delay=backoff_s(settings, attempt))
        return
    await msg.ack()


async def exhausted(
    msg: Msg,
    event: DeliveryExhausted,
    on_exhausted: Callable[[DeliveryExhausted], Awaitable[None]],
    settings: Settings,
) -> None:
    """A request JetStream gave up on (adapters/exhausted.py); ack once it is handled."""
    try:
        await on_exhausted(event)
    except Exception:
        log.exception("could not fail exhausted request %d; will retry", event.request_seq)
        await msg.nak(delay=backoff_s(settings, msg.metadata.num_delivered or 1))
        return
    await msg.ack()
