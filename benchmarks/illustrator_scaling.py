"""Images per minute with 1, 2 and 4 ComfyUI sandbox backends, and the illustrator's overhead.

Each configuration runs N sandbox servers (separate processes, fixed render time) and N
illustrator processes sharing the durable consumer, every illustrator seeing the whole
pool (`COMFYUI_URLS`), on a fresh embedded nats-server. After a warm-up round, a batch of
requests is published at once and timed to its last `image.completed`. Every request has
its own prompt and seed, so ComfyUI's node cache cannot skip the sampler.

The overhead run plays images one at a time against one backend: end-to-end time (publish
of `image.requested` to receipt of `image.completed`) minus the render time the backend
itself reports (its `execution_start` to `execution_success` timestamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
from nats.js import JetStreamContext

from taleforge.cli.embedded import EmbeddedNats, free_port
from taleforge.contracts import STREAM_NAME, ImageCompleted, ImageRequested, publish_headers
from taleforge.persistence.adapters.event_log import ensure_stream

RENDER_MS = 2000  # a fast real GPU render; the overhead run uses a shorter one
OVERHEAD_RENDER_MS = 300
IMAGES_PER_BACKEND = 8
OVERHEAD_IMAGES = 30
SIZE = 128


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(30):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/system_stats")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _stack(
    backends: int, render_ms: int = RENDER_MS
) -> AsyncIterator[tuple[JetStreamContext, list[str]]]:
    with tempfile.TemporaryDirectory() as tmp, _processes() as procs:
        server = EmbeddedNats(Path(tmp) / "nats")
        await asyncio.to_thread(server.start)
        try:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_stream(js)
            urls = []
            for _ in range(backends):
                port = free_port()
                procs.append(
                    _spawn(
                        [
                            "-m",
                            "taleforge.sandboxes.comfyui",
                            "--port",
                            str(port),
                            "--render-ms",
                            str(render_ms),
                            "--no-previews",
                            "--log-level",
                            "warning",
                        ],
                        {},
                    )
                )
                urls.append(f"http://127.0.0.1:{port}")
            await asyncio.gather(*(_wait_http(url) for url in urls))
            env = {
                "NATS_URL": server.url,
                "COMFYUI_URLS": ",".join(urls),
                "ILLUSTRATOR_CHECKPOINT": "sandbox-v1.safetensors",
                "ILLUSTRATOR_STEPS": "10",
                "ILLUSTRATOR_LOG_LEVEL": "WARNING",
            }
            for _ in range(backends):
                procs.append(_spawn(["-m", "taleforge.illustrator"], env))
            async with asyncio.timeout(60):  # every illustrator's worker waits on a pull
                while True:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        info = await js.consumer_info(STREAM_NAME, "illustrator")
                        if (info.num_waiting or 0) >= backends:
                            break
                    await asyncio.sleep(0.1)
            yield js, urls
            await nc.close()
        finally:
            await asyncio.to_thread(server.stop)


def _request(session_id: uuid.UUID, n: int) -> ImageRequested:
    turn_id = uuid.uuid4()
    return ImageRequested(
        session_id=session_id,
        user_id=uuid.uuid4(),
        turn_id=turn_id,
        image_id=uuid.uuid5(turn_id, "image:scene"),
        prompt=f"a lantern-lit harbour, view {n}",
        seed=n,
        width=SIZE,
        height=SIZE,
    )


async def _render_batch(js: JetStreamContext, count: int) -> tuple[float, dict[uuid.UUID, float]]:
    """Publish `count` requests at once; seconds to the last completion, and each one's time."""
    session_id = uuid.uuid4()
    done: dict[uuid.UUID, float] = {}
    finished = asyncio.Event()

    async def on_completed(msg: nats.aio.msg.Msg) -> None:
        event = ImageCompleted.model_validate_json(msg.data)
        done.setdefault(event.image_id, time.perf_counter())
        if len(done) >= count:
            finished.set()

    nc = js._nc  # the same connection: completions are seen without another client
    sub = await nc.subscribe(f"story.events.{session_id}.image.completed", cb=on_completed)
    requests = [_request(session_id, n) for n in range(count)]
    started = time.perf_counter()
    for request in requests:
        await js.publish(request.subject(), request.to_bytes(), headers=publish_headers(request))
    async with asyncio.timeout(300):
        await finished.wait()
    await sub.unsubscribe()
    return max(done.values()) - started, {k: v - started for k, v in done.items()}


async def _throughput(backends: int) -> float:
    async with _stack(backends) as (js, _):
        # Warm-up: sockets open, caches fill, each process settles on a server of its own.
        await _render_batch(js, 2 * backends)
        elapsed, _ = await _render_batch(js, IMAGES_PER_BACKEND * backends)
    return IMAGES_PER_BACKEND * backends / elapsed * 60


async def _overhead() -> list[float]:
    """Per image: end-to-end ms minus the backend's own execution ms, one image at a time."""
    samples = []
    async with (
        _stack(1, OVERHEAD_RENDER_MS) as (js, urls),
        httpx.AsyncClient(base_url=urls[0]) as http,
    ):
        await _render_batch(js, 2)
        for n in range(OVERHEAD_IMAGES):
            elapsed, _ = await _render_batch(js, 1)
            prompt_id = (await http.get("/_sandbox/prompts")).json()[-1]["prompt_id"]
            history = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
            stamps = {event: data["timestamp"] for event, data in history["status"]["messages"]}
            render_s = (stamps["execution_success"] - stamps["execution_start"]) / 1000
            samples.append((elapsed - render_s) * 1000)
            del n
    return samples


async def main() -> None:
    print(
        f"illustrator scaling: sandbox render {RENDER_MS} ms/image, "
        f"{IMAGES_PER_BACKEND} images per backend, N backends + N illustrator processes"
    )
    rates = {}
    for backends in (1, 2, 4):
        rates[backends] = await _throughput(backends)
        print(f"  {backends} backend(s): {rates[backends]:7.1f} images/min")
    print(f"  ratio 4:1 = {rates[4] / rates[1]:.2f} (target >= 3.6; ideal 4.0)")
    overhead = sorted(await _overhead())
    p99 = overhead[min(len(overhead) - 1, round(0.99 * (len(overhead) - 1)))]
    print(
        f"  illustrator overhead beyond render time ({len(overhead)} images, one at a time): "
        f"median {statistics.median(overhead):.1f} ms, p99 {p99:.1f} ms"
    )
