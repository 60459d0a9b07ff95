"""The prompt queue and the one worker that 'executes' workflows node by node.

Shapes follow ComfyUI 0.3.x (`server.py`, `execution.py`, `main.py`): queue items are
`[number, prompt_id, prompt, extra_data, outputs_to_execute]`; per-prompt websocket events go
only to the submitting clientId; `executing` with `node: null` is sent after the history entry
is written, so it is the safe end-of-run signal.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from taleforge.sandboxes.comfyui.config import ComfyUISandboxConfig, SandboxFaults
from taleforge.sandboxes.comfyui.hub import JPEG_FORMAT, SocketHub
from taleforge.sandboxes.comfyui.nodes import INPUT_FILES, node_classes
from taleforge.sandboxes.comfyui.progress import NodeProgressRegistry
from taleforge.sandboxes.comfyui.render import encode_png, encode_preview, render_scene
from taleforge.sandboxes.comfyui.validation import is_link, validate_prompt

log = logging.getLogger(__name__)

SAMPLER_SHARE = 0.7  # of render_ms; the rest is spread over the other nodes


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


@dataclass
class RunFaults:
    """The faults one run drew from the counters when it started."""

    fail: bool = False
    hang: bool = False
    drop_socket: bool = False

    @property
    def any(self) -> bool:
        return self.fail or self.hang or self.drop_socket


class Interrupted(Exception):
    pass


class NodeFailed(Exception):
    pass


@dataclass
class RunState:
    item: QueueItem
    faults: RunFaults
    messages: list[list[Any]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress_sent: int = 0
    progress: NodeProgressRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.progress = NodeProgressRegistry(self.item.prompt_id)


class ComfyEngine:
    def __init__(self, config: ComfyUISandboxConfig, hub: SocketHub) -> None:
        self.config = config
        self.hub = hub
        self.input_choices: list[str] = list(INPUT_FILES)
        self.inputs: dict[str, bytes] = {}  # uploaded input images by name
        self.classes = node_classes(config.checkpoints, self.input_choices)
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.submitted: list[dict[str, Any]] = []
        self.images: dict[tuple[str, str, str], bytes] = {}
        self._number = 0
        self._image_counter = 0
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        # node id -> (input signature, node outputs, ui output): ComfyUI's "classic" cache.
        self._cache: dict[str, tuple[str, tuple[Any, ...], dict[str, Any] | None]] = {}

    # ---- queue -------------------------------------------------------------------------

    @property
    def faults(self) -> SandboxFaults:
        return self.config.faults

    def queue_info(self) -> dict[str, Any]:
        remaining = len(self.pending) + (1 if self.running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = -self._number if body.get("front") else self._number
            self._number += 1
        record = {"received_at": _now_ms(), "body": body}
        self.submitted.append(record)
        if "prompt" not in body:
            record["accepted"] = False
            return 400, {
                "error": {
                    "type": "no_prompt",
                    "message": "No prompt provided",
                    "details": "No prompt provided",
                    "extra_info": {},
                },
                "node_errors": {},
            }
        prompt = body["prompt"]
        result = validate_prompt(prompt, self.classes)
        record["accepted"] = result.ok
        if not result.ok:
            log.warning("invalid prompt: %s", result.error)
            return 400, {"error": result.error, "node_errors": result.node_errors}
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        record["prompt_id"] = prompt_id
        self.pending.append(QueueItem(number, prompt_id, prompt, extra_data, result.outputs))
        self._wake.set()
        self._broadcast_status()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}

    def delete_pending(self, prompt_ids: list[str]) -> None:
        self.pending = [item for item in self.pending if item.prompt_id not in prompt_ids]
        self._broadcast_status()

    def clear_pending(self) -> None:
        self.pending.clear()
        self._broadcast_status()

    def interrupt(self) -> None:
        self._interrupt.set()

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None) -> Any:
        if prompt_id is not None:
            entry = self.history.get(prompt_id)
            return {prompt_id: entry} if entry is not None else {}
        items = list(self.history.items())
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return dict(items)

    def _broadcast_status(self) -> None:
        asyncio.get_running_loop().create_task(
            self.hub.send_json("status", {"status": self.queue_info()})
        )

    # ---- worker ------------------------------------------------------------------------

    async def run_worker(self) -> None:
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = min(self.pending, key=lambda i: i.number)
            self.pending.remove(item)
            self.running = item
            try:
                state = await self._execute(item)
                self._record_history(state)
            except Exception:  # the worker must survive any bug in one run
                log.exception("sandbox worker failed on %s", item.prompt_id)
            finally:
                self.running = None
            await self.hub.send_json(
                "executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id
            )
            await self.hub.send_json("status", {"status": self.queue_info()})

    def _draw_faults(self) -> RunFaults:
        f = self.faults
        drawn = RunFaults(f.fail_next > 0, f.hang_next > 0, f.drop_socket_next > 0)
        f.fail_next = max(0, f.fail_next - 1)
        f.hang_next = max(0, f.hang_next - 1)
        f.drop_socket_next = max(0, f.drop_socket_next - 1)
        return drawn

    async def _emit(self, state: RunState, event: str, data: dict[str, Any]) -> None:
        """Send one of the run's status events, kept for its history entry as ComfyUI does."""
        state.messages.append([event, data])
        await self.hub.send_json(event, data, state.item.client_id)

    async def _progress_state(self, data: dict[str, Any]) -> None:
        # ComfyUI's WebUIProgressHandler uses send_sync WITHOUT a sid: a broadcast.
        await self.hub.send_json("progress_state", data)

    async def _execute(self, item: QueueItem) -> RunState:
        self._interrupt.clear()
        state = RunState(item, self._draw_faults())
        pid = item.prompt_id
        await self._emit(state, "execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
        order = self._order(item)
        signatures = {nid: self._signature(item.prompt, nid) for nid in order}
        cached = [
            nid
            for nid in order
            if self._cache.get(nid, ("",))[0] == signatures[nid]
            and not (state.faults.any and item.prompt[nid]["class_type"] == "KSampler")
        ]
        cached = [nid for nid in cached if self._ancestors_cached(item.prompt, nid, set(cached))]
        await self._emit(
            state,
            "execution_cached",
            {"nodes": cached, "prompt_id": pid, "timestamp": _now_ms()},
        )
        values: dict[str, tuple[Any, ...]] = {}
        for nid in cached:
            _, outs, ui = self._cache[nid]
            values[nid] = outs
            if ui is not None:
                state.outputs[nid] = ui
        other_ms = self.config.render_ms * (1 - SAMPLER_SHARE) / max(1, len(order))
        for nid in order:
            if nid in values:
                if nid in item.outputs:  # ComfyUI stages cached outputs and finishes them
                    await self._progress_state(state.progress.finish(nid))
                continue
            node = item.prompt[nid]
            try:
                if self._interrupt.is_set():
                    raise Interrupted()
                await self._progress_state(state.progress.start(nid))
                executing = {"node": nid, "display_node": nid, "prompt_id": pid}
                await self.hub.send_json("executing", executing, item.client_id)
                inputs = self._resolve(node["inputs"], values)
                outs, ui = await self._run_node(state, nid, node["class_type"], inputs, other_ms)
            except Interrupted:
                await self._emit(
                    state,
                    "execution_interrupted",
                    {
                        "prompt_id": pid,
                        "node_id": nid,
                        "node_type": node["class_type"],
                        "executed": list(state.executed),
                        "timestamp": _now_ms(),
                    },
                )
                return state
            except Exception as exc:
                await self._emit(state, "execution_error", self._error_data(state, nid, exc))
                return state
            values[nid] = outs
            state.executed.append(nid)
            self._cache[nid] = (signatures[nid], outs, ui)
            if ui is not None:
                state.outputs[nid] = ui
                await self.hub.send_json(
                    "executed",
                    {"node": nid, "display_node": nid, "output": ui, "prompt_id": pid},
                    item.client_id,
                )
            await self._progress_state(state.progress.finish(nid))
        await self._emit(state, "execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
        return state

    def _error_data(self, state: RunState, nid: str, exc: Exception) -> dict[str, Any]:
        node = state.item.prompt[nid]
        return {
            "prompt_id": state.item.prompt_id,
            "node_id": nid,
            "node_type": node["class_type"],
            "executed": list(state.executed),
            "exception_message": str(exc),
            "exception_type": type(exc).__name__,
            "traceback": [
                "Traceback (most recent call last):\n",
                '  File "execution.py", line 496, in execute\n',
                f"{type(exc).__name__}: {exc}\n",
            ],
            "current_inputs": {k: [v] for k, v in node["inputs"].items()},
            "current_outputs": list(state.executed),
            "timestamp": _now_ms(),
        }

    def _record_history(self, state: RunState) -> None:
        events = [m[0] for m in state.messages]
        success = "execution_success" in events
        self.history[state.item.prompt_id] = {
            "prompt": state.item.as_list(),
            "outputs": state.outputs if success else {},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": state.messages,
            },
            "meta": {
                nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                for nid in state.outputs
            },
        }
        while len(self.history) > self.config.max_history:
            self.history.popitem(last=False)

    # ---- graph helpers -------------------------------------------------------------------

    def _order(self, item: QueueItem) -> list[str]:
        """Nodes the outputs need, dependencies first."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(nid: str) -> None:
            if nid in seen:
                return
            seen.add(nid)
            for value in item.prompt[nid]["inputs"].values():
                if is_link(value):
                    visit(str(value[0]))
            order.append(nid)

        for out in item.outputs:
            visit(out)
        return order

    def _signature(self, prompt: dict[str, Any], nid: str) -> str:
        node = prompt[nid]
        inputs = {
            k: (["link", self._signature(prompt, str(v[0])), v[1]] if is_link(v) else v)
            for k, v in node["inputs"].items()
        }
        return json.dumps([node["class_type"], inputs], sort_keys=True, default=str)

    def _ancestors_cached(self, prompt: dict[str, Any], nid: str, cached: set[str]) -> bool:
        return all(
            str(v[0]) in cached and self._ancestors_cached(prompt, str(v[0]), cached)
            for v in prompt[nid]["inputs"].values()
            if is_link(v)
        )

    @staticmethod
    def _resolve(inputs: dict[str, Any], values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
        return {k: (values[str(v[0])][v[1]] if is_link(v) else v) for k, v in inputs.items()}

    # ---- node simulation -----------------------------------------------------------------

    async def _run_node(
        self, state: RunState, nid: str, class_type: str, inputs: dict[str, Any], pause_ms: float
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        if class_type == "KSampler":
            return (await self._sample(state, nid, inputs),), None
        await asyncio.sleep(pause_ms / 1000)
        if class_type == "CheckpointLoaderSimple":
            name = inputs["ckpt_name"]
            return ({"model": name}, {"clip": name}, {"vae": name}), None
        if class_type == "CLIPTextEncode":
            return ({"text": inputs["text"]},), None
        if class_type == "EmptyLatentImage":
            size = {k: inputs[k] for k in ("width", "height", "batch_size")}
            return (size,), None
        if class_type == "VAEDecode":
            latent = inputs["samples"]
            images = [
                await asyncio.to_thread(
                    render_scene,
                    latent["positive"],
                    latent["seed"] + i,
                    latent["width"],
                    latent["height"],
                )
                for i in range(latent["batch_size"])
            ]
            return (images,), None
        if class_type == "LoadImage":
            uploaded = self.inputs.get(inputs["image"])
            if uploaded is not None:
                image = Image.open(io.BytesIO(uploaded)).convert("RGB")
            else:
                image = render_scene(inputs["image"], 0, 512, 512)
            return ([image], None), None
        if class_type == "SaveImage":
            stored = self._store(inputs["images"], inputs["filename_prefix"], "output")
            return (), {"images": stored}
        if class_type == "PreviewImage":
            return (), {"images": self._store(inputs["images"], "ComfyUI_temp", "temp")}
        raise NodeFailed(f"sandbox cannot simulate {class_type}")

    async def _sample(self, state: RunState, nid: str, inputs: dict[str, Any]) -> dict[str, Any]:
        latent = {
            **inputs["latent_image"],
            "seed": inputs["seed"],
            "positive": inputs["positive"]["text"],
            "negative": inputs["negative"]["text"],
            "steps": inputs["steps"],
        }
        if state.faults.fail:
            raise RuntimeError(self.faults.fail_message)
        if state.faults.hang:
            await self._interrupt.wait()
            raise Interrupted()
        steps = inputs["steps"]
        step_s = self.config.render_ms * SAMPLER_SHARE / steps / 1000
        client = state.item.client_id
        for step in range(1, steps + 1):
            await self._maybe_drop_socket(state)
            if self._interrupt.is_set():
                raise Interrupted()
            await asyncio.sleep(step_s)
            # Like ComfyUI's progress hook: the registry update (progress_state) goes first.
            await self._progress_state(state.progress.update(nid, step, steps))
            progress = {"value": step, "max": steps, "prompt_id": state.item.prompt_id, "node": nid}
            await self.hub.send_json("progress", progress, client)
            state.progress_sent += 1
            if self.config.preview_frames and client and step in (steps // 2 or 1, steps):
                preview = render_scene(latent["positive"], latent["seed"], 128, 128)
                await self.hub.send_preview(JPEG_FORMAT, encode_preview(preview), client)
        await self._maybe_drop_socket(state, finished=True)
        return latent

    async def _maybe_drop_socket(self, state: RunState, finished: bool = False) -> None:
        client = state.item.client_id
        if not (state.faults.drop_socket and client):
            return
        if finished or state.progress_sent >= self.faults.drop_after_progress:
            state.faults.drop_socket = False
            log.info("fault: dropping websocket of %s", client)
            await self.hub.drop(client)

    def _store(self, images: list[Image.Image], prefix: str, kind: str) -> list[dict[str, str]]:
        subfolder, _, base = prefix.rpartition("/")
        stored = []
        for image in images:
            self._image_counter += 1
            filename = f"{base or 'ComfyUI'}_{self._image_counter:05}_.png"
            self.images[(filename, subfolder, kind)] = encode_png(image)
            stored.append({"filename": filename, "subfolder": subfolder, "type": kind})
        return stored
