"""The ComfyUI sandbox's pictures and its workflow validation, without a server."""

from __future__ import annotations

import io

from PIL import Image

from taleforge.illustrator.workflows import fill_template, load_template
from taleforge.sandboxes.comfyui.config import DEFAULT_CHECKPOINTS
from taleforge.sandboxes.comfyui.nodes import node_classes
from taleforge.sandboxes.comfyui.render import encode_png, render_scene
from taleforge.sandboxes.comfyui.validation import validate_prompt

CLASSES = node_classes(DEFAULT_CHECKPOINTS)


def _png(prompt: str, seed: int = 1, width: int = 256, height: int = 192) -> bytes:
    return encode_png(render_scene(prompt, seed, width, height))


def _workflow() -> dict:
    return fill_template(
        load_template(),
        {
            "prompt": "a lighthouse",
            "negative_prompt": "",
            "seed": 1,
            "width": 512,
            "height": 512,
            "steps": 4,
            "scale": 7.0,
            "sampler": "euler",
            "model": DEFAULT_CHECKPOINTS[0],
        },
    )


def test_png_is_valid_with_requested_size() -> None:
    image = Image.open(io.BytesIO(_png("a castle on a hill")))
    image.verify()
    assert (image.format, image.size) == ("PNG", (256, 192))


def test_png_is_deterministic_and_depends_on_prompt_and_seed() -> None:
    assert _png("a castle") == _png("a castle")
    assert _png("a castle") != _png("a dragon")
    assert _png("a castle", seed=1) != _png("a castle", seed=2)


def test_bundled_workflow_validates() -> None:
    result = validate_prompt(_workflow(), CLASSES)
    assert result.ok and result.outputs == ["9"] and result.node_errors == {}


def test_dangling_link_is_a_node_error() -> None:
    workflow = _workflow()
    workflow["8"]["inputs"]["vae"] = ["42", 2]
    result = validate_prompt(workflow, CLASSES)
    assert result.error is not None
    assert result.error["type"] == "prompt_outputs_failed_validation"
    error = result.node_errors["8"]["errors"][0]
    assert error["type"] == "bad_linked_input"
    assert result.node_errors["8"]["class_type"] == "VAEDecode"
    assert result.node_errors["8"]["dependent_outputs"] == ["9"]


def test_unknown_class_missing_class_type_and_no_output() -> None:
    workflow = _workflow()
    workflow["3"]["class_type"] = "FancySampler"
    assert validate_prompt(workflow, CLASSES).error["type"] == "missing_node_type"  # type: ignore[index]
    assert validate_prompt({"1": {"inputs": {}}}, CLASSES).error["type"] == "invalid_prompt"  # type: ignore[index]
    no_output = {k: v for k, v in _workflow().items() if k != "9"}
    assert validate_prompt(no_output, CLASSES).error["type"] == "prompt_no_outputs"  # type: ignore[index]
    assert validate_prompt([1, 2], CLASSES).error["type"] == "invalid_prompt"  # type: ignore[index]


def test_bad_values_are_reported_per_input() -> None:
    workflow = _workflow()
    workflow["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    workflow["3"]["inputs"]["steps"] = "20"
    result = validate_prompt(workflow, CLASSES)
    kinds = {nid: [e["type"] for e in entry["errors"]] for nid, entry in result.node_errors.items()}
    assert kinds == {"3": ["invalid_input_type"], "4": ["value_not_in_list"]}
