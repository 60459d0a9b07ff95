"""The ComfyUI sandbox over real HTTP and websockets, checked against ComfyUI's shapes."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from taleforge.illustrator.workflows import fill_template, load_template
from taleforge.sandboxes.comfyui import ComfyUISandboxConfig, create_app
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(create_app(ComfyUISandboxConfig(render_ms=60))) as url:
        yield url


def workflow(prompt: str = "a lighthouse in a storm", seed: int = 3) -> dict[str, Any]:
    values = {
        "prompt": prompt,
        "negative_prompt": "",
        "seed": seed,
        "width": 192,
        "height": 128,
        "steps": 6,
        "scale": 7.0,
        "sampler": "euler",
        "model": "sandbox-v1.safetensors",
    }
    return fill_template(load_template(), values)


async def open_socket(base_url: str, client_id: str) -> ClientConnection:
    ws = await connect(f"{base_url.replace('http', 'ws')}/ws?clientId={client_id}")
    hello = json.loads(await ws.recv())
    assert hello["type"] == "status" and hello["data"]["sid"] == client_id
    assert "queue_remaining" in hello["data"]["status"]["exec_info"]
    return ws


async def collect(ws: ClientConnection, prompt_id: str) -> list[Any]:
    """Frames until `executing` with node null for our prompt (json decoded, bytes kept)."""
    frames: list[Any] = []
    async with asyncio.timeout(10):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                frames.append(raw)
                continue
            message = json.loads(raw)
            frames.append(message)
            data = message["data"]
            if (
                message["type"] == "executing"
                and data.get("node") is None
                and data.get("prompt_id") == prompt_id
            ):
                return frames


async def test_full_websocket_flow_history_and_view(base_url: str) -> None:
    client_id = uuid.uuid4().hex
    ws = await open_socket(base_url, client_id)
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/prompt", json={"prompt": workflow(), "client_id": client_id})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
        prompt_id = body["prompt_id"]
        frames = await collect(ws, prompt_id)
        await ws.close()

        kinds = [f["type"] if isinstance(f, dict) else "binary" for f in frames]
        own = [k for k in kinds if k != "status"]
        assert own[:2] == ["execution_start", "execution_cached"]
        assert own[-2:] == ["execution_success", "executing"]
        assert "executed" in own and own.count("progress") == 6 and "binary" in own
        progress = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
        assert progress[-1] == {"value": 6, "max": 6, "prompt_id": prompt_id, "node": "3"}
        preview = next(f for f in frames if isinstance(f, bytes))
        assert struct.unpack(">II", preview[:8]) == (1, 1) and preview[8:10] == b"\xff\xd8"
        executing = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "executing"]
        assert executing[0] == {"node": "4", "display_node": "4", "prompt_id": prompt_id}

        history = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
        assert history["status"]["status_str"] == "success" and history["status"]["completed"]
        assert history["prompt"][1] == prompt_id
        image = history["outputs"]["9"]["images"][0]
        assert image["type"] == "output"
        view = await http.get("/view", params=image)
        assert view.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(view.content)).size == (192, 128)
        assert prompt_id in (await http.get("/history", params={"max_items": 5})).json()


NODE_PROGRESS_KEYS = {
    "value",
    "max",
    "state",
    "node_id",
    "prompt_id",
    "display_node_id",
    "parent_node_id",
    "real_node_id",
}


async def test_progress_state_like_comfyui_progress_registry(base_url: str) -> None:
    client_id = uuid.uuid4().hex
    ws = await open_socket(base_url, client_id)
    bystander = await open_socket(base_url, uuid.uuid4().hex)
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = {"prompt": workflow(prompt="a progress bar", seed=11), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
    frames = [f for f in await collect(ws, prompt_id) if isinstance(f, dict)]
    await ws.close()

    kinds = [f["type"] for f in frames]
    states = [f["data"] for f in frames if f["type"] == "progress_state"]
    assert states and kinds.index("progress_state") > kinds.index("execution_cached")
    for data in states:
        assert set(data) == {"prompt_id", "nodes"} and data["prompt_id"] == prompt_id
        for node_id, node in data["nodes"].items():
            assert set(node) == NODE_PROGRESS_KEYS
            assert node["state"] in {"running", "finished"}  # pending nodes are not sent
            assert node["node_id"] == node["display_node_id"] == node["real_node_id"] == node_id
            assert node["prompt_id"] == prompt_id and node["parent_node_id"] is None
            assert 0 <= node["value"] <= node["max"]
    # Each node: `running` 0/1 when it starts, then `finished` with value == max.
    executed = [f["data"]["node"] for f in frames if f["type"] == "executing"][:-1]
    last = states[-1]["nodes"]
    assert set(last) == set(executed) and "3" in executed
    assert all(n["state"] == "finished" and n["value"] == n["max"] for n in last.values())
    assert last["3"]["max"] == 6 and states[0]["nodes"][executed[0]]["value"] == 0
    # The sampler's registry update precedes each `progress` frame, as in ComfyUI's hook.
    for i, kind in enumerate(kinds):
        if kind == "progress":
            step = frames[i]["data"]["value"]
            assert kinds[i - 1] == "progress_state"
            assert frames[i - 1]["data"]["nodes"]["3"] == {
                **frames[i - 1]["data"]["nodes"]["3"],
                "state": "running",
                "value": step,
                "max": 6,
            }
    # send_sync without a sid: another client gets progress_state too, but never `progress`.
    seen: list[str] = []
    async with asyncio.timeout(5):
        while len([k for k in seen if k == "progress_state"]) < len(states):
            raw = await bystander.recv()
            if isinstance(raw, str):
                message = json.loads(raw)
                if message["data"].get("prompt_id") == prompt_id:
                    seen.append(message["type"])
    assert set(seen) == {"progress_state"}
    await bystander.close()


async def test_unknown_prompt_history_is_empty_and_queue_shape(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get(f"/history/{uuid.uuid4()}")).json() == {}
        queue = (await http.get("/queue")).json()
        assert set(queue) == {"queue_running", "queue_pending"}
        info = (await http.get("/object_info")).json()
        for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler"):
            assert name in info
        assert info["SaveImage"]["output_node"] is True
        stats = (await http.get("/system_stats")).json()
        assert "system" in stats and "devices" in stats


async def test_bad_requests_get_comfyui_errors(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        not_json = await http.post("/prompt", content=b"{not json")
        assert not_json.status_code == 500 and "Internal Server Error" in not_json.text
        bad = workflow()
        bad["3"]["inputs"]["positive"] = ["77", 0]
        response = await http.post("/prompt", json={"prompt": bad, "client_id": "x"})
        assert response.status_code == 400
        body = response.json()
        assert set(body["error"]) == {"type", "message", "details", "extra_info"}
        assert body["node_errors"]["3"]["errors"][0]["type"] == "bad_linked_input"
        unknown = await http.post("/prompt", json={"prompt": {"1": {"class_type": "Nope"}}})
        assert unknown.json()["error"]["type"] == "missing_node_type"


async def test_events_go_only_to_the_latest_socket_of_the_client(base_url: str) -> None:
    client_id = uuid.uuid4().hex
    first = await open_socket(base_url, client_id)
    second = await open_socket(base_url, client_id)  # replaces the first silently
    async with httpx.AsyncClient(base_url=base_url) as http:
        body = {"prompt": workflow(prompt="a replaced socket"), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
    frames = await collect(second, prompt_id)
    assert any(isinstance(f, dict) and f["type"] == "execution_success" for f in frames)
    leftovers = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            while True:
                leftovers.append(json.loads(await first.recv()))
    assert all(m["type"] == "status" for m in leftovers)
    await first.close()
    await second.close()


async def test_faults_error_hang_interrupt_and_drop(base_url: str) -> None:
    client_id = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=base_url) as http:
        await http.delete("/_sandbox/prompts")
        assert (await http.put("/_sandbox/faults", json={"fail_next": 1})).json()["fail_next"] == 1
        ws = await open_socket(base_url, client_id)
        body = {"prompt": workflow(prompt="fails"), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        frames = await collect(ws, prompt_id)
        error = next(f["data"] for f in frames if f["type"] == "execution_error")
        assert error["node_type"] == "KSampler" and "out of memory" in error["exception_message"]
        entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
        assert entry["status"]["status_str"] == "error"

        await http.put("/_sandbox/faults", json={"hang_next": 1})
        body = {"prompt": workflow(prompt="hangs"), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        await asyncio.sleep(0.1)
        assert (await http.get(f"/history/{prompt_id}")).json() == {}  # running looks unknown
        assert (await http.get("/queue")).json()["queue_running"][0][1] == prompt_id
        await http.post("/interrupt")
        frames = await collect(ws, prompt_id)
        assert any(f["type"] == "execution_interrupted" for f in frames)

        await http.put("/_sandbox/faults", json={"drop_socket_next": 1, "drop_after_progress": 1})
        body = {"prompt": workflow(prompt="drops"), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        with pytest.raises(Exception):  # noqa: B017 - the socket is closed under us
            await collect(ws, prompt_id)
        async with asyncio.timeout(5):
            while not (await http.get(f"/history/{prompt_id}")).json():
                await asyncio.sleep(0.05)
        submitted = (await http.get("/_sandbox/prompts")).json()
        assert [s["body"]["prompt"]["6"]["inputs"]["text"] for s in submitted] == [
            "fails",
            "hangs",
            "drops",
        ]
