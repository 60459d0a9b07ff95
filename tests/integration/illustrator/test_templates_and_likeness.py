"""Templates in the KV bucket, character likeness and Supabase storage, on real NATS + sandbox."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from nats.js import JetStreamContext

from taleforge.contracts import (
    ImageCompleted,
    ImageFailed,
    ImageKind,
    SessionStarted,
    publish_headers,
)
from taleforge.contracts.events import Character, ScenarioSnapshot
from taleforge.illustrator.adapters.supabase_storage import SupabaseImageStore
from taleforge.illustrator.likeness import IdentityBook, pinned_seed
from taleforge.illustrator.templates import TemplateRegistry
from taleforge.illustrator.workflows import WorkflowError, load_template
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration

MIRA = "a red-haired elven archer in a green cloak"


async def start_session(js: JetStreamContext, session_id: uuid.UUID) -> None:
    started = SessionStarted(
        session_id=session_id,
        user_id=uuid.uuid4(),
        scenario_id="gate",
        title="The gate",
        scenario=ScenarioSnapshot(characters=[Character(name="Mira", description=MIRA)]),
    )
    await js.publish(started.subject(), started.to_bytes(), headers=publish_headers(started))


# ---- templates ---------------------------------------------------------------------------


async def test_registered_template_is_validated_versioned_and_used(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    js = harness.js
    settings = harness.settings(comfyui_url, placeholders={"prefix": "sandbox_custom"})
    registry = await TemplateRegistry.open(js, settings.allowed_placeholders)
    assert (await registry.get("scene")).version == 0  # shipped until an operator replaces it

    with pytest.raises(WorkflowError, match=r"placeholder %colour% .* not one the illustrator"):
        broken = load_template("scene")
        broken["3"]["inputs"]["denoise"] = "%colour%"
        await registry.register("scene", json.dumps(broken))
    with pytest.raises(WorkflowError, match="no output node"):
        await registry.register("scene", json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    with pytest.raises(WorkflowError, match="not valid JSON"):
        await registry.register("scene", "{")

    custom = load_template("scene")
    custom["9"]["inputs"]["filename_prefix"] = "%prefix%"  # an operator placeholder
    assert (await registry.register("scene", json.dumps(custom))).version == 1
    custom["3"]["inputs"]["scheduler"] = "karras"
    assert (await registry.register("scene", json.dumps(custom))).version == 2
    assert (await registry.get("scene", 1)).workflow["3"]["inputs"]["scheduler"] == "normal"

    async with harness.running(settings):
        event = await harness.outcome(harness.request())
    assert isinstance(event, ImageCompleted), event
    assert (event.template, event.template_version) == ("scene", 2)
    sent = (await sandbox_prompts(comfyui_url))[0]["body"]["prompt"]
    assert sent["9"]["inputs"]["filename_prefix"] == "sandbox_custom"
    assert sent["3"]["inputs"]["scheduler"] == "karras"


async def test_templates_cli_registers_lists_and_refuses(nats_url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "portrait.json", tmp_path / "bad.json"
    good.write_text(json.dumps(load_template("portrait")))
    bad.write_text(json.dumps({"nodes": [], "links": []}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"NATS_URL": nats_url, "ILLUSTRATOR_LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "taleforge.illustrator", "templates", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    registered = await asyncio.to_thread(cli, "register", "portrait", str(good))
    assert registered.returncode == 0, registered.stderr
    assert "registered portrait template version 1" in registered.stdout
    refused = await asyncio.to_thread(cli, "register", "scene", str(bad))
    assert refused.returncode == 2 and "UI format" in refused.stderr
    listed = (await asyncio.to_thread(cli, "list")).stdout.splitlines()
    assert listed[0].startswith("scene\tv0\tshipped") and listed[1].startswith("portrait\tv1")


# ---- likeness ----------------------------------------------------------------------------


async def test_same_character_same_seed_and_prefix_in_every_picture(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    js = harness.js
    session_id = uuid.uuid4()
    request = functools.partial(harness.request, session_id=session_id)
    await start_session(js, session_id)
    settings = harness.settings(comfyui_url)
    async with harness.running(settings):
        portrait = await harness.outcome(request(kind=ImageKind.PORTRAIT, characters=["Mira"]))
        scene = await harness.outcome(request(prompt="at the well", characters=["mira"]))
    async with harness.running(settings):  # a restarted illustrator remembers her
        later = await harness.outcome(request(prompt="asleep", characters=["Mira"]))
    events = [portrait, scene, later]
    assert all(isinstance(e, ImageCompleted) for e in events), events
    looks = [e.characters[0] for e in events]
    assert {look.seed for look in looks} == {pinned_seed(session_id, "Mira")}
    assert {e.seed for e in events} == {pinned_seed(session_id, "Mira")}
    assert {look.prefix for look in looks} == {f"Mira, {MIRA}"}
    assert looks[1].reference_image == portrait.object_name  # the first portrait is her reference
    sent = await sandbox_prompts(comfyui_url)
    texts = [p["body"]["prompt"]["6"]["inputs"]["text"] for p in sent]
    assert all(text.startswith(f"Mira, {MIRA}, ") for text in texts)
    assert portrait.template == "portrait" and scene.template == "scene"


async def test_reference_image_reaches_a_workflow_that_takes_one(
    harness: Any, comfyui_url: str, sandbox_prompts: Any
) -> None:
    js = harness.js
    session_id = uuid.uuid4()
    request = functools.partial(harness.request, session_id=session_id)
    settings = harness.settings(comfyui_url)
    registry = await TemplateRegistry.open(js, settings.allowed_placeholders)
    with_reference = load_template("scene")
    with_reference["20"] = {"class_type": "LoadImage", "inputs": {"image": "%reference_image%"}}
    with_reference["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    await registry.register("scene", json.dumps(with_reference))
    async with harness.running(settings):
        refused = await harness.outcome(request(characters=["Tam"]))
        portrait = await harness.outcome(request(kind=ImageKind.PORTRAIT, characters=["Tam"]))
        scene = await harness.outcome(request(characters=["Tam"]))
    assert isinstance(refused, ImageFailed) and "Tam has no reference image" in refused.reason
    assert isinstance(scene, ImageCompleted), scene
    assert scene.characters[0].reference_image == portrait.object_name
    sent = (await sandbox_prompts(comfyui_url))[-1]["body"]["prompt"]
    loaded = sent["20"]["inputs"]["image"]
    assert loaded.startswith("taleforge_ref_")


async def test_identity_is_created_once_whoever_asks(harness: Any) -> None:
    js = harness.js
    session_id = uuid.uuid4()
    books = [await IdentityBook.open(js) for _ in range(3)]
    found = await asyncio.gather(*(b.identity_for(session_id, "Old Bren") for b in books))
    assert len(set(found)) == 1 and found[0].prefix == "Old Bren"
    assert found[0].seed != pinned_seed(uuid.uuid4(), "Old Bren")


# ---- Supabase storage (against a local stand-in speaking its REST shape) ------------------


def supabase_standin(key: str) -> tuple[FastAPI, dict[str, Any]]:
    """Just enough of Supabase Storage's REST API: bucket create, object upload/download."""
    app, state = FastAPI(), {"buckets": set(), "objects": {}}

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {key}"

    @app.post("/storage/v1/bucket")
    async def create_bucket(request: Request) -> Response:
        if not authorised(request):
            return Response(status_code=403)
        name = (await request.json())["name"]
        if name in state["buckets"]:
            return Response('{"error":"Duplicate"}', status_code=409)
        state["buckets"].add(name)
        return Response(json.dumps({"name": name}), status_code=200)

    @app.post("/storage/v1/object/{bucket}/{path:path}")
    async def upload(bucket: str, path: str, request: Request) -> Response:
        if not authorised(request) or bucket not in state["buckets"]:
            return Response(status_code=403 if not authorised(request) else 404)
        if (bucket, path) in state["objects"] and request.headers.get("x-upsert") != "true":
            return Response('{"error":"Duplicate"}', status_code=409)
        meta = json.loads(base64.b64decode(request.headers["x-metadata"]))
        state["objects"][(bucket, path)] = (await request.body(), request.headers, meta)
        return Response(json.dumps({"Key": f"{bucket}/{path}"}), status_code=200)

    @app.get("/storage/v1/object/{bucket}/{path:path}")
    async def download(bucket: str, path: str, request: Request) -> Response:
        if not authorised(request):
            return Response(status_code=403)
        found = state["objects"].get((bucket, path))
        if found is None:
            return Response(status_code=404)
        return Response(found[0], media_type=found[1]["content-type"])

    return app, state


async def test_supabase_storage_round_trip_through_the_service(
    harness: Any, comfyui_url: str
) -> None:
    app, state = supabase_standin("service-key")
    with serve_in_thread(app) as supabase_url:
        settings = harness.settings(
            comfyui_url,
            storage="supabase",
            supabase_url=supabase_url,
            supabase_service_key="service-key",
        )
        async with harness.running(settings):
            event = await harness.outcome(harness.request(width=128, height=96))
        assert isinstance(event, ImageCompleted), event
        data, headers, meta = state["objects"][(event.bucket, event.object_name)]
        assert meta == {"sha256": event.sha256, "width": 128, "height": 96}
        assert headers["content-type"] == "image/png" and len(data) == event.size_bytes
        store = SupabaseImageStore(supabase_url, "service-key", event.bucket)
        try:
            assert await store.get_image(event.object_name) == data
        finally:
            await store.aclose()
