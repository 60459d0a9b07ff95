"""Template validation, likeness and settings: pure pieces, no servers."""

from __future__ import annotations

import json
import uuid

import pytest

from taleforge.contracts import ImageRequested
from taleforge.illustrator.likeness import Identity, identity_key, pinned_seed, prefix_for
from taleforge.illustrator.rendering import prompt_with_likeness, seed_for
from taleforge.illustrator.settings import Settings
from taleforge.illustrator.workflows import (
    BUILTIN_PLACEHOLDERS,
    PLACEHOLDERS,
    WorkflowError,
    load_template,
    parse_template,
    placeholders_in,
    validate_template,
)

SILLYTAVERN = {"prompt", "negative_prompt", "seed", "width", "height", "steps", "scale"}


def test_shipped_templates_use_only_the_sillytavern_placeholders() -> None:
    assert SILLYTAVERN | {"sampler", "model"} == PLACEHOLDERS
    for kind in ("scene", "portrait"):
        template = validate_template(load_template(kind), BUILTIN_PLACEHOLDERS)
        assert placeholders_in(template) == PLACEHOLDERS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object of nodes"),
        ('{"nodes": [], "links": []}', "UI format"),
        ('{"1": {"inputs": {}}}', "node '1' has no class_type"),
        ('{"1": {"class_type": "SaveImage"}}', "has no inputs object"),
        ('{"1": {"class_type": "VAEDecode", "inputs": {}}}', "no output node"),
        ('{"1": {"class_type": "SaveImage", "inputs": {"images": ["7", 0]}}}', "missing node"),
        ('{"1": {"class_type": "SaveImage", "inputs": {"x": "%lora%"}}}', "%lora% at $.1"),
        ('{"1": {"class_type": "SaveImage", "inputs": {"x": "s %seed%"}}}', "whole value"),
    ],
)
def test_invalid_templates_are_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(WorkflowError, match=message.replace("$", r"\$")):
        parse_template(text, BUILTIN_PLACEHOLDERS)


def test_operator_placeholders_are_allowed_once_configured() -> None:
    text = json.dumps({"1": {"class_type": "SaveImage", "inputs": {"x": "%lora%"}}})
    settings = Settings(placeholders='{"lora": "detail.safetensors"}')
    assert parse_template(text, settings.allowed_placeholders)
    with pytest.raises(ValueError, match="built-in placeholders cannot be set: seed"):
        Settings(placeholders={"seed": 1})


def test_pool_urls_and_consumer_limits_from_settings() -> None:
    assert Settings(comfyui_url="http://a:1").backend_urls == ["http://a:1"]
    pool = Settings(comfyui_urls=" http://a:1, http://b:2 ,", comfyui_url="http://x:9")
    assert pool.backend_urls == ["http://a:1", "http://b:2"]
    assert Settings().max_ack_pending == 1000
    assert Settings(max_ack_pending=8).max_ack_pending == 8


def test_pinned_seed_is_per_session_and_character() -> None:
    session = uuid.uuid4()
    assert pinned_seed(session, "Mira") == pinned_seed(session, "  mira ") < 2**32
    assert pinned_seed(session, "Mira") != pinned_seed(session, "Tam")
    assert pinned_seed(session, "Mira") != pinned_seed(uuid.uuid4(), "Mira")
    assert identity_key(session, "Mira") == identity_key(session, "MIRA")
    assert identity_key(session, "Ælfrida the Élan").startswith(f"{session}.")


def test_likeness_goes_first_in_the_prompt_and_pins_the_seed() -> None:
    session = uuid.uuid4()
    mira = Identity(str(session), "Mira", 42, prefix_for("Mira", " an  elven\narcher "))
    assert mira.prefix == "Mira, an elven archer"
    assert prompt_with_likeness("at the gate", [mira]) == "Mira, an elven archer, at the gate"
    request = ImageRequested(
        session_id=session,
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        image_id=uuid.uuid4(),
        prompt="at the gate",
    )
    assert seed_for(request, [mira]) == 42
    assert seed_for(request.model_copy(update={"seed": 7}), [mira]) == 7
