"""The ComfyUI pool against real sandbox servers: one socket per server, routing, failover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from taleforge.cli.embedded import free_port
from taleforge.illustrator.adapters.comfyui import ComfyUIBackend, ExecutionInterrupted
from taleforge.illustrator.adapters.comfyui_pool import BackendPool
from taleforge.illustrator.workflows import fill_template, load_template
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig
from taleforge.sandboxes.comfyui import create_app as create_sandbox
from taleforge.sandboxes.comfyui.render import encode_png, render_scene
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


def workflow(prompt: str = "a lighthouse", seed: int = 1) -> dict[str, Any]:
    values = {
        "prompt": prompt,
        "negative_prompt": "",
        "seed": seed,
        "width": 64,
        "height": 64,
        "steps": 4,
        "scale": 7.0,
        "sampler": "euler",
        "model": "sandbox-v1.safetensors",
    }
    return fill_template(load_template("scene"), values)


class Sandboxes:
    """Sandbox servers a test can stop and start again on the same port."""

    def __init__(self, render_ms: int) -> None:
        self.render_ms = render_ms
        self.ports: list[int] = []
        self.apps: dict[int, Any] = {}
        self._running: dict[int, contextlib.ExitStack] = {}

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def start(self, i: int | None = None) -> int:
        if i is None:
            self.ports.append(free_port())
            i = len(self.ports) - 1
        port = self.ports[i]
        app = create_sandbox(ComfyUISandboxConfig(render_ms=self.render_ms))
        stack = contextlib.ExitStack()
        stack.enter_context(serve_in_thread(app, port=port))
        self.apps[i], self._running[i] = app, stack
        return i

    def stop(self, i: int) -> None:
        self._running.pop(i).close()

    def close(self) -> None:
        for i in list(self._running):
            self.stop(i)


@contextlib.contextmanager
def sandboxes(count: int, render_ms: int = 100) -> Iterator[Sandboxes]:
    boxes = Sandboxes(render_ms)
    try:
        for _ in range(count):
            boxes.start()
        yield boxes
    finally:
        boxes.close()


@contextlib.asynccontextmanager
async def pool_of(urls: list[str], **kwargs: Any) -> AsyncIterator[BackendPool]:
    pool = BackendPool.from_urls(urls, timeout_s=kwargs.pop("timeout_s", 20), **kwargs)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.aclose()


async def start_hung_render(http: httpx.AsyncClient, pool: BackendPool) -> asyncio.Task[Any]:
    """A render the sandbox stalls on at its KSampler, returned once it runs there."""
    (await http.put("/_sandbox/faults", json={"hang_next": 1})).raise_for_status()
    job = asyncio.create_task(pool.render(workflow()))
    async with asyncio.timeout(10):
        while not (await http.get("/queue")).json()["queue_running"]:
            await asyncio.sleep(0.05)
    return job


async def test_one_socket_per_server_carries_all_our_prompts(sandbox_prompts: Any) -> None:
    with sandboxes(1, render_ms=60) as boxes:
        async with pool_of([boxes.url(0)]) as pool:
            results = await asyncio.gather(*(pool.render(workflow(seed=i)) for i in range(3)))
            hub = boxes.apps[0].state.engine.hub
            assert list(hub.sockets) == [pool.backends[0].client_id]  # one socket, ours
        sent = await sandbox_prompts(boxes.url(0))
    assert len({r.prompt_id for r in results}) == 3
    assert {p["body"]["client_id"] for p in sent} == {pool.backends[0].client_id}
    assert {p["prompt_id"] for p in sent} == {r.prompt_id for r in results}
    assert all(r.data.startswith(b"\x89PNG") for r in results)


async def test_job_goes_to_the_least_busy_server() -> None:
    with sandboxes(3, render_ms=2000) as boxes:
        async with httpx.AsyncClient() as http:  # someone else keeps servers 0 and 2 busy
            for i, count in ((0, 2), (2, 1)):
                for n in range(count):
                    body = {"prompt": workflow(f"other {n}"), "client_id": "someone-else"}
                    (await http.post(f"{boxes.url(i)}/prompt", json=body)).raise_for_status()
        async with pool_of([boxes.url(i) for i in range(3)]) as pool:
            chosen = await pool.choose()
    assert chosen.base_url == boxes.url(1)


async def test_server_dying_mid_job_is_taken_out_and_the_job_redispatched(
    sandbox_prompts: Any,
) -> None:
    with sandboxes(2, render_ms=1500) as boxes:
        async with pool_of([boxes.url(0), boxes.url(1)], health_interval_s=30) as pool:
            job = asyncio.create_task(pool.render(workflow("the keep")))
            async with asyncio.timeout(10):
                while not (busy := [i for i in (0, 1) if await sandbox_prompts(boxes.url(i))]):
                    await asyncio.sleep(0.05)
            dead = busy[0]
            boxes.stop(dead)  # kill the server that has our prompt
            result = await asyncio.wait_for(job, 20)
            assert result.backend == boxes.url(1 - dead)
            assert not pool.backends[dead].healthy
            assert pool.backends[1 - dead].healthy


async def test_dead_server_returns_to_rotation_when_it_answers() -> None:
    with sandboxes(2) as boxes:
        boxes.stop(1)
        async with pool_of([boxes.url(0), boxes.url(1)], health_interval_s=0.1) as pool:
            assert [b.healthy for b in pool.backends] == [True, False]
            assert (await pool.render(workflow())).backend == boxes.url(0)
            boxes.start(1)
            async with asyncio.timeout(10):
                while not pool.backends[1].healthy:
                    await asyncio.sleep(0.05)
            assert await pool.backends[1].wait_connected(5)  # its socket reconnected too
            rendered = await asyncio.gather(*(pool.render(workflow(seed=i)) for i in range(4)))
            assert {r.backend for r in rendered} == {boxes.url(0), boxes.url(1)}


async def test_no_live_server_is_a_transient_failure() -> None:
    from taleforge.illustrator.adapters.comfyui import NoBackend

    async with pool_of([f"http://127.0.0.1:{free_port()}"]) as pool:
        with pytest.raises(NoBackend) as caught:
            await pool.render(workflow())
    assert caught.value.transient


async def test_cancelled_render_is_interrupted_on_the_server(sandbox_prompts: Any) -> None:
    with sandboxes(1, render_ms=100) as boxes:
        async with httpx.AsyncClient(base_url=boxes.url(0)) as http:
            async with pool_of([boxes.url(0)]) as pool:
                job = await start_hung_render(http, pool)
                job.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await job
            prompt_id = (await sandbox_prompts(boxes.url(0)))[0]["prompt_id"]
            async with asyncio.timeout(5):
                while not (history := (await http.get(f"/history/{prompt_id}")).json()):
                    await asyncio.sleep(0.05)
    events = [m[0] for m in history[prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in events


async def test_reference_image_is_uploaded_and_loaded() -> None:
    reference = encode_png(render_scene("a red-haired archer", 3, 96, 80))
    flow = workflow()
    flow["20"] = {"class_type": "LoadImage", "inputs": {"image": "ref_archer.png"}}
    flow["21"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["20", 0], "filename_prefix": "r"},
    }
    del flow["9"]  # only the reference comes out, so we can see it went through
    with sandboxes(1) as boxes:
        backend = ComfyUIBackend(boxes.url(0))
        backend.start()
        try:
            rendered = await backend.render(flow, inputs={"ref_archer.png": reference})
        finally:
            await backend.aclose()
    assert rendered.data[16:24] == (96).to_bytes(4, "big") + (80).to_bytes(4, "big")


async def test_interrupt_by_someone_else_is_transient() -> None:
    with sandboxes(1, render_ms=100) as boxes:
        async with httpx.AsyncClient(base_url=boxes.url(0)) as http:
            async with pool_of([boxes.url(0)]) as pool:
                job = await start_hung_render(http, pool)
                await http.post("/interrupt", json={})
                with pytest.raises(ExecutionInterrupted) as caught:
                    await job
    assert caught.value.transient
