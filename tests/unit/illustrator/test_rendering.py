"""Small pure pieces of the illustrator: seeds, PNG headers, messages."""

from __future__ import annotations

import json
import uuid

import pytest

from taleforge.contracts import ImageRequested
from taleforge.illustrator.adapters.comfyui import ExecutionFailed, describe_rejection
from taleforge.illustrator.adapters.comfyui_progress import RenderProgress
from taleforge.illustrator.handlers import backoff_s
from taleforge.illustrator.rendering import png_size, progress_message, seed_for
from taleforge.illustrator.settings import Settings
from taleforge.sandboxes.comfyui.render import encode_png, render_scene


def _request(seed: int | None = None) -> ImageRequested:
    return ImageRequested(
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        image_id=uuid.uuid4(),
        prompt="a tower",
        seed=seed,
    )


def test_seed_is_given_or_derived_deterministically() -> None:
    assert seed_for(_request(seed=7)) == 7
    request = _request()
    assert seed_for(request) == seed_for(request) < 2**32


def test_png_size_reads_header_and_rejects_non_png() -> None:
    assert png_size(encode_png(render_scene("x", 1, 320, 200))) == (320, 200)
    with pytest.raises(ExecutionFailed):
        png_size(b"GIF89a" + b"\0" * 40)


def test_progress_message_shape() -> None:
    request = _request()
    message = json.loads(progress_message(request, RenderProgress(42, 100, 3, 7)))
    assert message == {
        "type": "image.progress",
        "session_id": str(request.session_id),
        "turn_id": str(request.turn_id),
        "image_id": str(request.image_id),
        "value": 42,
        "max": 100,
        "nodes_done": 3,
        "nodes_total": 7,
    }


def test_rejection_is_described_per_node() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
        "node_errors": {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [{"message": "Value not in list", "details": "ckpt_name: 'x'"}],
            }
        },
    }
    assert describe_rejection(body) == (
        "Prompt outputs failed: CheckpointLoaderSimple #4: Value not in list (ckpt_name: 'x')"
    )


def test_backoff_doubles_and_is_capped() -> None:
    settings = Settings(retry_backoff_s=2.0)
    assert [backoff_s(settings, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_s(settings, 30) == 60.0


def test_settings_read_unprefixed_infrastructure_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://example:4222")
    monkeypatch.setenv("COMFYUI_URL", "http://gpu:8188")
    monkeypatch.setenv("ILLUSTRATOR_MAX_DELIVER", "3")
    settings = Settings()
    assert (settings.nats_url, settings.comfyui_url, settings.max_deliver) == (
        "nats://example:4222",
        "http://gpu:8188",
        3,
    )
