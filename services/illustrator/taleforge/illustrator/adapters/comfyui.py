"""Client for a ComfyUI server (or the sandbox): queue a workflow, follow it, fetch the image.

Flow, as ComfyUI expects it: open `/ws?clientId=<id>` FIRST (per-prompt events go only to
the socket whose clientId came with the prompt), `POST /prompt` with that client_id, follow
events for our prompt_id until `executing` with `node: null`, then read the outputs from
`/history/{prompt_id}` and the bytes from `/view`. If the socket drops, poll the history;
`{}` there means unknown OR still running, so `/queue` tells the two apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], Awaitable[None]]


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


@dataclass(frozen=True)
class RenderedImage:
    data: bytes
    prompt_id: str
    filename: str
    previews_seen: int = 0


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


class ComfyUIClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 120.0,
        poll_interval_s: float = 0.25,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=30.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _ws_url(self, client_id: str) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"

    async def render(
        self,
        workflow: dict[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        timeout_s: float | None = None,
    ) -> RenderedImage:
        """Run `workflow` and return the first output image's bytes."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        client_id = uuid.uuid4().hex
        try:
            ws = await connect(self._ws_url(client_id), max_size=None, open_timeout=10)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ComfyUIUnavailable(f"cannot open ComfyUI websocket: {exc}") from exc
        prompt_id: str | None = None
        try:
            prompt_id = await self._queue_prompt(workflow, client_id)
            log.info("queued ComfyUI prompt %s", prompt_id)
            remaining = deadline - time.monotonic()
            async with asyncio.timeout(remaining):
                previews = await self._follow(ws, prompt_id, on_progress)
                entry = await self._wait_history(prompt_id)
        except TimeoutError:
            if prompt_id is None:
                raise ComfyUIUnavailable("ComfyUI did not accept the prompt in time") from None
            await self._cancel(prompt_id)
            raise RenderTimeout(
                f"ComfyUI did not finish prompt {prompt_id} within "
                f"{timeout_s or self.timeout_s:g}s; it was interrupted"
            ) from None
        finally:
            await ws.close()
        image = await self._fetch_output(prompt_id, entry)
        return RenderedImage(image[1], prompt_id, image[0], previews)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ComfyUIUnavailable(f"ComfyUI {method} {path} failed: {exc!r}") from exc
        if response.status_code >= 500:
            raise ComfyUIUnavailable(
                f"ComfyUI {method} {path} answered {response.status_code}: {response.text[:200]}"
            )
        return response

    async def _queue_prompt(self, workflow: dict[str, Any], client_id: str) -> str:
        response = await self._request(
            "POST", "/prompt", json={"prompt": workflow, "client_id": client_id}
        )
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:200], "node_errors": {}}
            raise WorkflowRejected(
                f"ComfyUI rejected the workflow: {describe_rejection(body)}",
                body.get("node_errors") or {},
            )
        if response.status_code != 200:
            raise ComfyUIError(f"ComfyUI /prompt answered {response.status_code}")
        return str(response.json()["prompt_id"])

    async def _follow(self, ws: Any, prompt_id: str, on_progress: ProgressCallback | None) -> int:
        """Read events for our prompt until the run ends. Returns previews seen."""
        previews = 0
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    previews += 1  # 4-byte event type + 4-byte format + image: not needed
                    continue
                message = json.loads(frame)
                kind, data = message.get("type"), message.get("data") or {}
                if data.get("prompt_id") != prompt_id:
                    continue
                if kind == "progress" and on_progress is not None:
                    await on_progress(int(data["value"]), int(data["max"]))
                elif kind == "execution_error":
                    raise _execution_failed(data)
                elif kind == "execution_interrupted":
                    raise ExecutionInterrupted(
                        f"ComfyUI run interrupted at {data.get('node_type')} #{data.get('node_id')}"
                    )
                elif kind == "executing" and data.get("node") is None:
                    return previews
        except ConnectionClosed as exc:
            log.warning("ComfyUI websocket closed mid-run (%s); polling history", exc)
        return previews

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
                raise ComfyUIUnavailable(f"ComfyUI lost prompt {prompt_id} (restarted?)")
            await asyncio.sleep(self.poll_interval_s)

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        body = (await self._request("GET", f"/history/{prompt_id}")).json()
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _in_queue(self, prompt_id: str) -> bool:
        queue = (await self._request("GET", "/queue")).json()
        items = queue.get("queue_running", []) + queue.get("queue_pending", [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    async def _fetch_output(self, prompt_id: str, entry: dict[str, Any]) -> tuple[str, bytes]:
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
        return first["filename"], response.content

    async def _cancel(self, prompt_id: str) -> None:
        """Best effort: dequeue the prompt if pending, interrupt it if running."""
        try:
            queue = (await self._request("GET", "/queue")).json()
            running = [item[1] for item in queue.get("queue_running", [])]
            await self._request("POST", "/queue", json={"delete": [prompt_id]})
            if prompt_id in running:
                await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
            log.warning("cancelled ComfyUI prompt %s after timeout", prompt_id)
        except ComfyUIError as exc:
            log.warning("could not cancel ComfyUI prompt %s: %s", prompt_id, exc)


def _execution_failed(data: dict[str, Any]) -> ExecutionFailed:
    return ExecutionFailed(
        f"ComfyUI {data.get('node_type')} #{data.get('node_id')} failed: "
        f"{data.get('exception_type')}: {data.get('exception_message')}"
    )
