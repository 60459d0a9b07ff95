"""The illustrator on a real nats-server against the ComfyUI sandbox over HTTP + websockets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from PIL import Image

from taleforge.contracts import (
    IMAGE_BUCKET,
    STREAM_NAME,
    ImageCompleted,
    ImageFailed,
    ImageRequested,
    live_subject,
)
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig
from taleforge.sandboxes.comfyui import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


async def set_faults(comfyui_url: str, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=comfyui_url) as http:
        (await http.put("/_sandbox/faults", json=faults)).raise_for_status()


async def live_progress(nc: Client, request: ImageRequested) -> list[dict[str, Any]]:
    """The request's live image messages, collected from now on as they arrive."""
    progress: list[dict[str, Any]] = []

    async def on_live(msg: Any) -> None:
        progress.append(json.loads(msg.data))

    await nc.subscribe(live_subject(request.session_id, request.turn_id), cb=on_live)
    return progress


async def test_request_yields_one_completed_png_in_the_store(
    harness: Any, comfyui_url: str
) -> None:
    nc, js = harness.nc, harness.js
    request = harness.request()
    progress = await live_progress(nc, request)
    async with harness.running(harness.settings(comfyui_url)):
        event = await harness.outcome(request)

    assert isinstance(event, ImageCompleted), event
    assert event.event_id == uuid.uuid5(request.image_id, "image.completed")
    assert (event.bucket, event.object_name) == (
        IMAGE_BUCKET,
        f"{request.session_id}/{request.image_id}.png",
    )
    assert (event.width, event.height) == (256, 192) and event.seed is not None
    data = (await (await js.object_store(IMAGE_BUCKET)).get(event.object_name)).data or b""
    assert hashlib.sha256(data).hexdigest() == event.sha256 and len(data) == event.size_bytes
    assert Image.open(io.BytesIO(data)).size == (256, 192)
    assert progress and {p["type"] for p in progress} == {"image.progress"}
    assert {p["image_id"] for p in progress} == {str(request.image_id)}
    # From `progress_state` (and `progress`): forward only, no repeats, full at the end.
    bar = [(p["value"], p["nodes_done"]) for p in progress]
    assert bar == sorted(bar) and len(set(bar)) == len(bar) and len(bar) > 5
    last = progress[-1]
    assert last["value"] == last["max"] == 100 and last["nodes_done"] == last["nodes_total"] == 7
    info = await js.consumer_info(STREAM_NAME, "illustrator")
    assert (info.num_ack_pending, info.num_pending) == (0, 0)
    assert info.config.max_deliver == 3 and info.config.max_ack_pending == 1000


async def test_socket_drop_falls_back_to_history(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    nc = harness.nc
    await set_faults(comfyui_url, drop_socket_next=1, drop_after_progress=1)
    request = harness.request()
    progress = await live_progress(nc, request)
    async with harness.running(harness.settings(comfyui_url)):
        event = await harness.outcome(request)
    assert isinstance(event, ImageCompleted), event
    assert progress and progress[-1]["value"] == progress[-1]["max"]  # full despite the drop
    assert len(await sandbox_prompts(comfyui_url)) == 1  # finished without a retry


async def test_execution_error_fails_at_once(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    await set_faults(comfyui_url, fail_next=1)
    request = harness.request()
    async with harness.running(harness.settings(comfyui_url)):
        event = await harness.outcome(request)
    assert isinstance(event, ImageFailed), event
    assert event.code == "execution_error" and "out of memory" in event.reason
    assert event.event_id == uuid.uuid5(request.image_id, "image.failed")
    assert len(await sandbox_prompts(comfyui_url)) == 1  # permanent: not retried


async def test_rejected_workflow_is_a_clear_failure(harness: Any, comfyui_url: str) -> None:
    settings = harness.settings(comfyui_url, checkpoint="missing-model.safetensors")
    async with harness.running(settings):
        event = await harness.outcome(harness.request())
    assert isinstance(event, ImageFailed), event
    assert event.code == "workflow_rejected"
    assert "CheckpointLoaderSimple #4: Value not in list" in event.reason
    assert "missing-model.safetensors" in event.reason


async def test_hang_times_out_interrupts_and_fails(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    await set_faults(comfyui_url, hang_next=1)
    async with harness.running(harness.settings(comfyui_url, render_timeout_s=1)):
        event = await harness.outcome(harness.request())
    assert isinstance(event, ImageFailed), event
    assert event.code == "render_timeout"
    prompt_id = (await sandbox_prompts(comfyui_url))[0]["prompt_id"]
    async with httpx.AsyncClient(base_url=comfyui_url) as http:
        async with asyncio.timeout(5):
            while not (history := (await http.get(f"/history/{prompt_id}")).json()):
                await asyncio.sleep(0.05)
    events = [m[0] for m in history[prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in events  # our interrupt reached the hung run


async def test_unreachable_comfyui_is_retried_then_fails(harness: Any) -> None:
    settings = harness.settings("http://127.0.0.1:9", max_deliver=2)
    async with harness.running(settings):
        event = await harness.outcome(harness.request())
    assert isinstance(event, ImageFailed), event
    assert event.code == "max_deliveries" and "gave up after 2 attempts" in event.reason


async def test_malformed_request_is_terminated_not_redelivered(
    harness: Any, comfyui_url: str
) -> None:
    js = harness.js
    request = harness.request()
    await js.publish(f"story.events.{request.session_id}.image.requested", b"{not an event")
    async with harness.running(harness.settings(comfyui_url)):
        event = await harness.outcome(request)
        assert isinstance(event, ImageCompleted), event
    info = await js.consumer_info(STREAM_NAME, "illustrator")
    assert (info.num_ack_pending, info.num_redelivered, info.num_pending) == (0, 0, 0)


async def test_render_longer_than_ack_wait_is_not_redelivered(
    harness: Any, sandbox_prompts: Any
) -> None:
    js = harness.js
    slow = create_sandbox(ComfyUISandboxConfig(render_ms=1800))
    with serve_in_thread(slow) as slow_url:
        async with harness.running(harness.settings(slow_url, ack_wait_s=0.9)):
            event = await harness.outcome(harness.request())
        assert isinstance(event, ImageCompleted), event
        assert len(await sandbox_prompts(slow_url)) == 1  # heartbeats kept the message ours
    info = await js.consumer_info(STREAM_NAME, "illustrator")
    assert (info.num_redelivered, info.num_ack_pending) == (0, 0)
