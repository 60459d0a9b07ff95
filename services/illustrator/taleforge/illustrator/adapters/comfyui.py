"""Client for one ComfyUI server (or the sandbox): queue a workflow, follow it, fetch the image.

Flow, as ComfyUI expects it: ONE long-lived websocket `/ws?clientId=<id>` per server and
process (per-prompt events go only to the socket whose clientId came with the prompt, and a
second socket with the same clientId silently replaces the first, so a socket per job would
be both wasteful and fragile). Every prompt we queue carries that client_id and a prompt_id
we choose, so its events can be routed to the waiting render before `POST /prompt` even
answers. A render follows its events until `executing` with `node: null`, then reads the
outputs from `/history/{prompt_id}` and the bytes from `/view`. `progress_state` is broadcast
to every socket, so it too is routed by its `prompt_id` (others' prompts are dropped). While
the socket is down, renders poll the history instead; `{}` there means unknown OR still
running, so `/queue` tells the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from taleforge.illustrator.adapters.comfyui_progress import PromptProgress, RenderProgress

log = logging.getLogger(__name__)

ProgressCallback = Callable[[RenderProgress], Awaitable[None]]
PROGRESS_EVENTS = frozenset({"progress", "progress_state", "execution_cached", "executed"})


class ComfyUIError(Exception):
    """A render that did not produce an image. `transient` says whether a retry may help."""

    code = "comfyui_error"
    transient = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ComfyUIUnavailable(ComfyUIError):
    """Cannot reach ComfyUI, it answered 5xx, or it lost our prompt: worth a retry."""

    code = "comfyui_unavailable"
    transient = True


class WorkflowRejected(ComfyUIError):
    """HTTP 400 from /prompt: the workflow does not validate (node_errors)."""

    code = "workflow_rejected"

    def __init__(self, reason: str, node_errors: dict[str, Any]) -> None:
        super().__init__(reason)
        self.node_errors = node_errors


class ExecutionFailed(ComfyUIError):
    """A node raised while executing (`execution_error`)."""

    code = "execution_error"


class ExecutionInterrupted(ComfyUIError):
    """Someone else interrupted the run; a retry may well succeed."""

    code = "execution_interrupted"
    transient = True


class RenderTimeout(ComfyUIError):
    """The render did not finish in time; it was interrupted / dequeued."""

    code = "render_timeout"


class NoBackend(ComfyUIUnavailable):
    """Every ComfyUI backend of the pool is down (or failed this job already)."""


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    prompt_id: str
    backend: str


def describe_rejection(body: dict[str, Any]) -> str:
    """One readable line from ComfyUI's 400 body."""
    error = body.get("error")
    headline = error.get("message", "invalid prompt") if isinstance(error, dict) else str(error)
    problems = []
    for node_id, entry in (body.get("node_errors") or {}).items():
        for err in entry.get("errors", []):
            detail = f" ({err['details']})" if err.get("details") else ""
            problems.append(f"{entry.get('class_type', '?')} #{node_id}: {err['message']}{detail}")
    if not problems and isinstance(error, dict) and error.get("details"):
        problems.append(str(error["details"]))
    return f"{headline}: {'; '.join(problems)}" if problems else headline


SOCKET_CLOSED = "_socket_closed"  # our own marker on a render's event queue


class ComfyUIBackend:
    """One ComfyUI server, shared by every render of this process."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        timeout_s: float = 120.0,
        poll_interval_s: float = 0.25,
        reconnect_max_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.reconnect_max_s = reconnect_max_s
        self.healthy = True
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=30.0)
        self._watchers: dict[str, asyncio.Queue[tuple[str, dict[str, Any]]]] = {}
        self._connected = asyncio.Event()
        self._socket_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ComfyUIBackend({self.base_url})"

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open the long-lived websocket in the background (reconnecting while we run)."""
        if self._socket_task is None:
            self._socket_task = asyncio.create_task(self._socket_loop())

    async def aclose(self) -> None:
        if self._socket_task is not None:
            self._socket_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._socket_task
            self._socket_task = None
        await self._http.aclose()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        return self.connected

    def _ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={self.client_id}"

    async def _socket_loop(self) -> None:
        delay = 0.2
        while True:
            try:
                async with connect(self._ws_url(), max_size=None, open_timeout=10) as ws:
                    self._connected.set()
                    delay = 0.2
                    log.info(
                        "ComfyUI websocket open: %s (client %s)", self.base_url, self.client_id
                    )
                    async for frame in ws:
                        self._dispatch(frame)
                log.warning("ComfyUI websocket closed by %s", self.base_url)
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                if self.connected:
                    log.warning("ComfyUI websocket to %s lost: %s", self.base_url, exc)
            finally:
                self._connected.clear()
                for events in self._watchers.values():
                    events.put_nowait((SOCKET_CLOSED, {}))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    def _dispatch(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            return  # previews: 4-byte event type, 4-byte format, image; no prompt id, not needed
        try:
            message = json.loads(frame)
            kind, data = message.get("type"), message.get("data") or {}
        except (ValueError, AttributeError):
            log.warning("ignoring unreadable ComfyUI frame from %s", self.base_url)
            return
        events = self._watchers.get(str(data.get("prompt_id")))
        if events is not None:
            events.put_nowait((str(kind), data))

    # ---- health and load -----------------------------------------------------------------

    async def probe(self, timeout_s: float = 2.0) -> bool:
        """Does the server answer `/system_stats`?"""
        try:
            response = await self._http.get("/system_stats", timeout=timeout_s)
            return response.status_code == 200 and "devices" in response.json()
        except (httpx.HTTPError, ValueError):
            return False

    async def queue_length(self, timeout_s: float = 2.0) -> int:
        """Prompts running or waiting on the server (everyone's, not only ours)."""
        queue = (await self._request("GET", "/queue", timeout=timeout_s)).json()
        return len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))

    async def upload_image(self, name: str, data: bytes) -> None:
        """Upload an input image (e.g. a character reference) under `name`, for LoadImage."""
        response = await self._request(
            "POST",
            "/upload/image",
            files={"image": (name, data, "image/png")},
            data={"overwrite": "true", "type": "input"},
        )
        if response.status_code != 200:
            raise ComfyUIError(f"ComfyUI /upload/image answered {response.status_code}")

    # ---- one render ----------------------------------------------------------------------

    async def render(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        timeout_s: float | None = None,
        inputs: Mapping[str, bytes] | None = None,
    ) -> RenderedImage:
        """Run `workflow` and return the first output image's bytes.

        `inputs` are files the workflow loads by name (LoadImage), uploaded first.
        """
        limit = timeout_s or self.timeout_s
        prompt_id = str(uuid.uuid4())
        events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._watchers[prompt_id] = events  # before POST: events may beat its answer
        progress = PromptProgress(workflow)
        queued = False
        try:
            async with asyncio.timeout(limit):
                for name, data in (inputs or {}).items():
                    await self.upload_image(name, data)
                await self._queue_prompt(workflow, prompt_id)
                queued = True
                log.info("queued ComfyUI prompt %s on %s", prompt_id, self.base_url)
                if self.connected:
                    await self._follow(events, prompt_id, progress, on_progress)
                entry = await self._wait_history(prompt_id)
        except TimeoutError:
            if not queued:
                raise ComfyUIUnavailable(
                    f"ComfyUI at {self.base_url} did not accept the prompt in time"
                ) from None
            await self._cancel(prompt_id, "timeout")
            raise RenderTimeout(
                f"ComfyUI did not finish prompt {prompt_id} within {limit:g}s; it was interrupted"
            ) from None
        except asyncio.CancelledError:
            if queued:  # nobody wants this image any more: free the GPU
                await asyncio.shield(self._cancel(prompt_id, "cancelled"))
            raise
        finally:
            self._watchers.pop(prompt_id, None)
        data = await self._fetch_output(prompt_id, entry)
        # The image is there: the bar ends full, also when the socket dropped mid-run.
        if on_progress is not None and (done := progress.complete()) is not None:
            await on_progress(done)
        return RenderedImage(data, prompt_id, self.base_url)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ComfyUIUnavailable(
                f"ComfyUI {method} {self.base_url}{path} failed: {exc!r}"
            ) from exc
        if response.status_code >= 500:
            raise ComfyUIUnavailable(
                f"ComfyUI {method} {self.base_url}{path} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        return response

    async def _queue_prompt(self, workflow: dict[str, Any], prompt_id: str) -> None:
        body = {"prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id}
        response = await self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                answer = response.json()
            except ValueError:
                answer = {"error": response.text[:200], "node_errors": {}}
            raise WorkflowRejected(
                f"ComfyUI rejected the workflow: {describe_rejection(answer)}",
                answer.get("node_errors") or {},
            )
        if response.status_code != 200:
            raise ComfyUIError(f"ComfyUI /prompt answered {response.status_code}")

    async def _follow(
        self,
        events: asyncio.Queue[tuple[str, dict[str, Any]]],
        prompt_id: str,
        progress: PromptProgress,
        on_progress: ProgressCallback | None,
    ) -> None:
        """Read our prompt's events until the run ends or the socket drops."""
        while True:
            kind, data = await events.get()
            if kind == SOCKET_CLOSED:
                log.warning("ComfyUI websocket dropped mid-run of %s; polling history", prompt_id)
                return
            if kind in PROGRESS_EVENTS:
                moved = progress.observe(kind, data)
                if moved is not None and on_progress is not None:
                    await on_progress(moved)
            elif kind == "execution_error":
                raise _execution_failed(data)
            elif kind == "execution_interrupted":
                raise ExecutionInterrupted(
                    f"ComfyUI run interrupted at {data.get('node_type')} #{data.get('node_id')}"
                )
            elif kind == "executing" and data.get("node") is None:
                return

    async def _wait_history(self, prompt_id: str) -> dict[str, Any]:
        """The history entry, polling while ComfyUI still has the prompt queued or running."""
        while True:
            entry = await self._history(prompt_id)
            if entry is not None:
                return entry
            if not await self._in_queue(prompt_id):
                entry = await self._history(prompt_id)  # it may have just finished
                if entry is not None:
                    return entry
                raise ComfyUIUnavailable(
                    f"ComfyUI at {self.base_url} lost prompt {prompt_id} (restarted?)"
                )
            await asyncio.sleep(self.poll_interval_s)

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        body = (await self._request("GET", f"/history/{prompt_id}")).json()
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _in_queue(self, prompt_id: str) -> bool:
        queue = (await self._request("GET", "/queue")).json()
        items = queue.get("queue_running", []) + queue.get("queue_pending", [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    async def _fetch_output(self, prompt_id: str, entry: dict[str, Any]) -> bytes:
        status = entry.get("status") or {}
        if status.get("status_str") == "error" or status.get("completed") is False:
            for event, data in status.get("messages", []):
                if event == "execution_error":
                    raise _execution_failed(data)
                if event == "execution_interrupted":
                    raise ExecutionInterrupted(f"ComfyUI run {prompt_id} was interrupted")
            raise ExecutionFailed(f"ComfyUI run {prompt_id} ended with status {status}")
        images = [
            image
            for output in (entry.get("outputs") or {}).values()
            for image in output.get("images", [])
        ]
        images.sort(key=lambda image: image.get("type") != "output")
        if not images:
            raise ExecutionFailed(f"ComfyUI run {prompt_id} produced no image")
        first = images[0]
        params = {k: first.get(k, "") for k in ("filename", "subfolder", "type")}
        response = await self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise ComfyUIUnavailable(f"ComfyUI /view answered {response.status_code}")
        return response.content

    async def _cancel(self, prompt_id: str, why: str) -> None:
        """Best effort: dequeue the prompt if pending, interrupt it if running."""
        try:
            queue = (await self._request("GET", "/queue", timeout=5.0)).json()
            running = [item[1] for item in queue.get("queue_running", [])]
            await self._request("POST", "/queue", json={"delete": [prompt_id]}, timeout=5.0)
            if prompt_id in running:
                # prompt_id scopes the interrupt to our run (newer ComfyUI; older ones ignore
                # it, and we only send it while our prompt is the one running).
                await self._request(
                    "POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=5.0
                )
            log.warning("cancelled ComfyUI prompt %s on %s (%s)", prompt_id, self.base_url, why)
        except ComfyUIError as exc:
            log.warning("could not cancel ComfyUI prompt %s: %s", prompt_id, exc)


def _execution_failed(data: dict[str, Any]) -> ExecutionFailed:
    return ExecutionFailed(
        f"ComfyUI {data.get('node_type')} #{data.get('node_id')} failed: "
        f"{data.get('exception_type')}: {data.get('exception_message')}"
    )
