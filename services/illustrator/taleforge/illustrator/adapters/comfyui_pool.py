"""A pool of ComfyUI servers: each job goes to the least busy healthy one.

Load is the server's own queue (`/queue`: everyone's running + pending prompts) plus the
renders this process has chosen it for but not yet queued, so two workers of one process do
not pick the same idle server in the same instant. Among equally loaded servers the one this
process used last wins: with several illustrator processes each settles on its own server
instead of colliding at random. A server that fails a job (unreachable, 5xx, lost prompt) is
taken out of rotation and the job is re-dispatched to another; a health loop probing
`/system_stats` puts it back once it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from taleforge.illustrator.adapters.comfyui import (
    ComfyUIBackend,
    ComfyUIUnavailable,
    NoBackend,
    ProgressCallback,
    RenderedImage,
    RenderTimeout,
)
from taleforge.illustrator.adapters.comfyui_progress import RenderProgress

log = logging.getLogger(__name__)


def process_client_id() -> str:
    """One websocket clientId per process (readable in ComfyUI's queue: host, pid)."""
    return f"taleforge-illustrator-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class BackendPool:
    def __init__(
        self,
        backends: Sequence[ComfyUIBackend],
        *,
        timeout_s: float = 120.0,
        health_interval_s: float = 2.0,
    ) -> None:
        if not backends:
            raise ValueError("a ComfyUI pool needs at least one backend URL")
        self.backends = list(backends)
        self.timeout_s = timeout_s
        self.health_interval_s = health_interval_s
        self._reserved: dict[str, int] = dict.fromkeys((b.base_url for b in backends), 0)
        self._last: ComfyUIBackend | None = None
        self._health_task: asyncio.Task[None] | None = None

    @classmethod
    def from_urls(
        cls, urls: Sequence[str], *, timeout_s: float = 120.0, health_interval_s: float = 2.0
    ) -> BackendPool:
        client_id = process_client_id()
        backends = [ComfyUIBackend(url, client_id=client_id, timeout_s=timeout_s) for url in urls]
        return cls(backends, timeout_s=timeout_s, health_interval_s=health_interval_s)

    async def start(self) -> None:
        """Open every backend's websocket, probe them all once, then keep probing."""
        for backend in self.backends:
            backend.start()
        await self.check_health()
        up = [b.base_url for b in self.backends if b.healthy]
        if not up:
            log.warning("no ComfyUI backend answers yet (%d configured)", len(self.backends))
        await asyncio.gather(*(b.wait_connected(2.0) for b in self.backends if b.healthy))
        self._health_task = asyncio.create_task(self._health_loop())

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await asyncio.gather(*(b.aclose() for b in self.backends))

    # ---- health --------------------------------------------------------------------------

    def mark_down(self, backend: ComfyUIBackend, why: str) -> None:
        if backend.healthy:
            log.warning("ComfyUI %s out of rotation: %s", backend.base_url, why)
        backend.healthy = False

    async def check_health(self) -> None:
        answers = await asyncio.gather(*(b.probe() for b in self.backends))
        for backend, ok in zip(self.backends, answers, strict=True):
            if ok and not backend.healthy:
                log.info("ComfyUI %s answers again: back in rotation", backend.base_url)
            elif not ok:
                self.mark_down(backend, "/system_stats did not answer")
            backend.healthy = ok

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            # Housekeeping, not part of any render: kept out of the traces.
            with suppress_http_instrumentation():
                await self.check_health()

    # ---- routing -------------------------------------------------------------------------

    async def _load(self, backend: ComfyUIBackend) -> int | None:
        try:
            remote = await backend.queue_length()
        except ComfyUIUnavailable as exc:
            self.mark_down(backend, exc.reason)
            return None
        return remote + self._reserved[backend.base_url]

    async def choose(self, exclude: set[str] | frozenset[str] = frozenset()) -> ComfyUIBackend:
        """The least busy healthy backend not in `exclude`; NoBackend if there is none."""
        candidates = [b for b in self.backends if b.healthy and b.base_url not in exclude]
        if not candidates:
            await self.check_health()  # one may have come back since the last probe
            candidates = [b for b in self.backends if b.healthy and b.base_url not in exclude]
        loads = await asyncio.gather(*(self._load(b) for b in candidates))
        ranked = [
            (load, backend is not self._last, random.random(), i)
            for i, (backend, load) in enumerate(zip(candidates, loads, strict=True))
            if load is not None
        ]
        if not ranked:
            raise NoBackend(
                f"no healthy ComfyUI backend ({len(self.backends)} configured, "
                f"{len(exclude)} failed this job)"
            )
        chosen = candidates[min(ranked)[-1]]
        self._last = chosen
        return chosen

    async def render(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        inputs: Mapping[str, bytes] | None = None,
    ) -> RenderedImage:
        """Render on the least busy backend; re-dispatch to another when one dies under us."""
        deadline = time.monotonic() + self.timeout_s
        failed: set[str] = set()
        while True:
            backend = await self.choose(failed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RenderTimeout("no ComfyUI backend finished the image in time")
            self._reserved[backend.base_url] += 1
            released = False

            async def release(progress: RenderProgress, backend: ComfyUIBackend = backend) -> None:
                # Once ComfyUI reports progress, /queue counts the prompt: drop our reservation.
                nonlocal released
                if not released:
                    released = True
                    self._reserved[backend.base_url] -= 1
                if on_progress is not None:
                    await on_progress(progress)

            try:
                return await backend.render(
                    workflow, on_progress=release, timeout_s=remaining, inputs=inputs
                )
            except ComfyUIUnavailable as exc:
                failed.add(backend.base_url)
                self.mark_down(backend, exc.reason)
                log.warning("re-dispatching image away from %s: %s", backend.base_url, exc.reason)
            finally:
                if not released:
                    self._reserved[backend.base_url] -= 1
