"""Several illustrator processes on one durable consumer; one is killed -9 mid-render."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from taleforge.contracts import STREAM_NAME, ImageCompleted, ImageRequested, publish_headers
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig
from taleforge.sandboxes.comfyui import create_app as create_sandbox
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


def start_illustrator(nats_url: str, comfyui_url: str) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "NATS_URL": nats_url,
        "COMFYUI_URL": comfyui_url,
        "ILLUSTRATOR_CHECKPOINT": "sandbox-v1.safetensors",
        "ILLUSTRATOR_STEPS": "5",
        "ILLUSTRATOR_ACK_WAIT_S": "1.5",
        "ILLUSTRATOR_MAX_DELIVER": "4",
        "ILLUSTRATOR_RENDER_TIMEOUT_S": "20",
        "ILLUSTRATOR_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "taleforge.illustrator"], env=env)


async def wait_for_workers(js: JetStreamContext, count: int) -> None:
    """Each process's idle worker has a pull request waiting on the consumer."""
    async with asyncio.timeout(30):
        while True:
            try:
                info = await js.consumer_info(STREAM_NAME, "illustrator")
                if (info.num_waiting or 0) >= count:
                    return
            except nats.js.errors.NotFoundError:
                pass
            await asyncio.sleep(0.1)


async def completed_in_stream(js: JetStreamContext, request: ImageRequested) -> int:
    """How many image.completed the stream holds for this image's session (not what a sub saw)."""
    subject = f"story.events.{request.session_id}.image.completed"
    info = await js.stream_info(STREAM_NAME, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_killed_illustrator_leaves_its_job_to_another_exactly_once(
    harness: Any, nats_url: str
) -> None:
    nc, js = harness.nc, harness.js
    with serve_in_thread(create_sandbox(ComfyUISandboxConfig(render_ms=2000))) as comfyui_url:
        procs = [start_illustrator(nats_url, comfyui_url) for _ in range(2)]
        try:
            await wait_for_workers(js, 2)
            request = harness.request(prompt="the ferryman at dusk", width=128, height=128)
            sub = await nc.subscribe(f"story.events.{request.session_id}.image.completed")
            await js.publish(
                request.subject(), request.to_bytes(), headers=publish_headers(request)
            )
            async with httpx.AsyncClient(base_url=comfyui_url) as http:
                async with asyncio.timeout(15):
                    while not (sent := (await http.get("/_sandbox/prompts")).json()):
                        await asyncio.sleep(0.05)
            client_id = sent[0]["body"]["client_id"]
            victim = next(p for p in procs if f"-{p.pid}-" in client_id)
            victim.send_signal(signal.SIGKILL)  # mid-render: no ack, no goodbye
            victim.wait(5)

            first = ImageCompleted.model_validate_json((await sub.next_msg(timeout=30)).data)
            assert first.image_id == request.image_id
            async with asyncio.timeout(10):  # the survivor's ack lands just after its publish
                while (info := await js.consumer_info(STREAM_NAME, "illustrator")).num_ack_pending:
                    await asyncio.sleep(0.05)
            assert info.delivered.consumer_seq == 2  # delivered twice: killed one, survivor
            assert await completed_in_stream(js, request) == 1
            async with httpx.AsyncClient(base_url=comfyui_url) as http:
                owners = {
                    p["body"]["client_id"] for p in (await http.get("/_sandbox/prompts")).json()
                }
            assert len(owners) == 2  # the killed one's and the survivor's
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait(30)
