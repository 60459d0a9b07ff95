"""Filling workflow templates keeps JSON types and refuses what it does not know."""

from __future__ import annotations

import json

import pytest

from taleforge.illustrator.workflows import WorkflowError, fill_template, load_template

VALUES = {
    "prompt": 'a "quoted" castle, 100% %seed% moody',
    "negative_prompt": "blurry",
    "seed": 1234567890123,
    "width": 640,
    "height": 384,
    "steps": 12,
    "scale": 6.5,
    "sampler": "dpmpp_2m",
    "model": "v1-5-pruned-emaonly.safetensors",
}


def test_fill_keeps_numbers_numbers_and_text_verbatim() -> None:
    template = load_template("scene")
    filled = fill_template(template, VALUES)
    sampler = filled["3"]["inputs"]
    assert sampler["seed"] == 1234567890123 and isinstance(sampler["seed"], int)
    assert sampler["steps"] == 12 and sampler["cfg"] == 6.5
    assert filled["5"]["inputs"] == {"width": 640, "height": 384, "batch_size": 1}
    assert filled["6"]["inputs"]["text"] == VALUES["prompt"]  # quotes and % survive
    assert filled["4"]["inputs"]["ckpt_name"] == VALUES["model"]
    assert "%" not in json.dumps({k: v for k, v in filled.items() if k != "6"})
    assert template["3"]["inputs"]["seed"] == "%seed%"  # the template is not mutated


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("%colour%", "unknown placeholder %colour%"),
        ("size %width%px", "must be the whole value"),  # a placeholder inside a string
    ],
)
def test_template_value_that_cannot_be_filled_is_refused(value: str, message: str) -> None:
    template = {"1": {"class_type": "X", "inputs": {"a": value}}}
    with pytest.raises(WorkflowError, match=message):
        fill_template(template, VALUES)


def test_unknown_value_and_missing_value_are_rejected() -> None:
    with pytest.raises(WorkflowError, match="unknown placeholder value"):
        fill_template(load_template(), {**VALUES, "colour": "red"})
    missing = {k: v for k, v in VALUES.items() if k != "seed"}
    with pytest.raises(WorkflowError, match="no value for placeholder %seed%"):
        fill_template(load_template(), missing)


def test_missing_template_is_a_clear_error() -> None:
    with pytest.raises(WorkflowError, match="no bundled workflow template"):
        load_template("nope")
