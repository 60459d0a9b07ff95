"""FastAPI app speaking ComfyUI's HTTP + websocket API (every route also under /api)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from taleforge.sandboxes.comfyui.config import ComfyUISandboxConfig, SandboxFaults
from taleforge.sandboxes.comfyui.engine import ComfyEngine
from taleforge.sandboxes.comfyui.hub import SocketHub
from taleforge.sandboxes.comfyui.uploads import parse_form, store_upload

SANDBOX_VERSION = "0.3.64-sandbox"


async def _json_body(request: Request) -> Any:
    return json.loads(await request.body())


def _comfy_router(engine: ComfyEngine, hub: SocketHub) -> APIRouter:
    router = APIRouter()

    @router.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId") or os.urandom(16).hex()
        hub.attach(sid, ws)
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": engine.queue_info(), "sid": sid}}
            )
            while True:
                await ws.receive_text()  # clients may send nothing; we only wait for close
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.detach(sid, ws)

    @router.post("/prompt")
    async def post_prompt(request: Request) -> Response:
        try:
            body = await _json_body(request)
        except ValueError:
            # aiohttp answers an unparsable body with its generic 500 page.
            return PlainTextResponse(
                "500 Internal Server Error\n\nServer got itself in trouble", status_code=500
            )
        if not isinstance(body, dict):
            return PlainTextResponse(
                "500 Internal Server Error\n\nServer got itself in trouble", status_code=500
            )
        status, payload = engine.submit(body)
        return JSONResponse(payload, status_code=status)

    @router.get("/prompt")
    async def get_prompt() -> dict[str, Any]:
        return engine.queue_info()

    @router.get("/queue")
    async def get_queue() -> dict[str, Any]:
        running = [engine.running.as_list()] if engine.running else []
        pending = [item.as_list() for item in sorted(engine.pending, key=lambda i: i.number)]
        return {"queue_running": running, "queue_pending": pending}

    @router.post("/queue")
    async def post_queue(request: Request) -> Response:
        body = await _json_body(request)
        if body.get("clear"):
            engine.clear_pending()
        if "delete" in body:
            engine.delete_pending([str(x) for x in body["delete"]])
        return Response(status_code=200)

    @router.post("/interrupt")
    async def post_interrupt(request: Request) -> Response:
        # Newer ComfyUI takes an optional {"prompt_id"}: interrupt only if that one runs.
        try:
            body = await _json_body(request)
        except ValueError:
            body = {}
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if wanted is None or (engine.running and engine.running.prompt_id == wanted):
            engine.interrupt()
        return Response(status_code=200)

    @router.get("/history")
    async def get_history(max_items: int | None = None) -> Any:
        return engine.get_history(max_items=max_items)

    @router.get("/history/{prompt_id}")
    async def get_history_item(prompt_id: str) -> Any:
        return engine.get_history(prompt_id)

    @router.post("/history")
    async def post_history(request: Request) -> Response:
        body = await _json_body(request)
        if body.get("clear"):
            engine.history.clear()
        for prompt_id in body.get("delete", []):
            engine.history.pop(str(prompt_id), None)
        return Response(status_code=200)

    @router.get("/view")
    async def view(filename: str, subfolder: str = "", type: str = "output") -> Response:
        if not filename or filename.startswith("/") or ".." in filename or ".." in subfolder:
            return Response(status_code=400)
        data = engine.images.get((filename, subfolder, type))
        if data is None:
            return Response(status_code=404)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        return Response(data, media_type="image/png", headers=headers)

    @router.get("/object_info")
    async def object_info() -> dict[str, Any]:
        return {name: cls.info() for name, cls in engine.classes.items()}

    @router.get("/object_info/{node_class}")
    async def object_info_node(node_class: str) -> dict[str, Any]:
        cls = engine.classes.get(node_class)
        return {node_class: cls.info()} if cls else {}

    @router.post("/upload/image")
    async def upload_image(request: Request) -> Response:
        form = parse_form(request.headers.get("content-type", ""), await request.body())
        status, payload = store_upload(engine.inputs, engine.input_choices, form)
        return JSONResponse(payload, status_code=status)

    @router.get("/system_stats")
    async def system_stats() -> dict[str, Any]:
        return {
            "system": {
                "os": os.name,
                "ram_total": 0,
                "ram_free": 0,
                "comfyui_version": SANDBOX_VERSION,
                "python_version": sys.version,
                "pytorch_version": "none (sandbox)",
                "embedded_python": False,
                "argv": sys.argv,
            },
            "devices": [
                {
                    "name": f"cpu ({platform.machine()}) sandbox",
                    "type": "cpu",
                    "index": None,
                    "vram_total": 0,
                    "vram_free": 0,
                    "torch_vram_total": 0,
                    "torch_vram_free": 0,
                }
            ],
        }

    return router


def _control_router(engine: ComfyEngine) -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox control"])

    @router.get("/faults")
    async def read_faults() -> SandboxFaults:
        return engine.config.faults

    @router.put("/faults")
    async def update_faults(changes: dict[str, Any]) -> SandboxFaults:
        merged = engine.config.faults.model_dump() | changes
        engine.config.faults = SandboxFaults.model_validate(merged)
        return engine.config.faults

    @router.get("/prompts")
    async def read_prompts() -> list[dict[str, Any]]:
        return engine.submitted

    @router.delete("/prompts")
    async def clear_prompts() -> Response:
        engine.submitted.clear()
        return Response(status_code=204)

    return router


def create_app(config: ComfyUISandboxConfig | None = None) -> FastAPI:
    config = (config or ComfyUISandboxConfig()).model_copy(deep=True)
    hub = SocketHub()
    engine = ComfyEngine(config, hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(engine.run_worker())
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    app = FastAPI(title="ComfyUI sandbox", version=SANDBOX_VERSION, lifespan=lifespan)
    app.state.engine = engine
    comfy = _comfy_router(engine, hub)
    app.include_router(comfy)
    app.include_router(comfy, prefix="/api")
    app.include_router(_control_router(engine))
    return app
