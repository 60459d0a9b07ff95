"""ComfyUI workflow templates with SillyTavern-style placeholders, filled in parsed JSON.

A template is an API-format workflow (`{node_id: {"class_type", "inputs"}}`) in which a
value may be exactly a quoted placeholder such as `"%seed%"`. Filling walks the parsed JSON
and swaps the whole value, so a seed stays an int and a prompt containing quotes or `%`
cannot break the JSON. The templates live in the `workflows/` folder next to this module.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

PLACEHOLDERS = frozenset(
    {"prompt", "negative_prompt", "seed", "width", "height", "steps", "scale", "sampler", "model"}
)
_WHOLE = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)%$")
_INSIDE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


class WorkflowError(ValueError):
    """A template that cannot be filled: unknown placeholder, missing value, bad JSON."""


def load_template(name: str = "scene") -> dict[str, Any]:
    """The bundled template `workflows/<name>.json`, parsed."""
    resource = resources.files("taleforge.illustrator").joinpath("workflows", f"{name}.json")
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WorkflowError(f"no bundled workflow template named {name!r}") from exc
    if not isinstance(data, dict):
        raise WorkflowError(f"workflow template {name!r} is not a JSON object of nodes")
    return data


def fill_template(template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A filled copy of `template`; every placeholder in it must be known and given."""
    unknown = set(values) - PLACEHOLDERS
    if unknown:
        raise WorkflowError(f"unknown placeholder value(s): {', '.join(sorted(unknown))}")

    def fill(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {key: fill(value, f"{where}.{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value, f"{where}[{i}]") for i, value in enumerate(node)]
        if isinstance(node, str):
            whole = _WHOLE.match(node)
            if whole:
                name = whole.group(1)
                if name not in PLACEHOLDERS:
                    raise WorkflowError(f"unknown placeholder %{name}% at {where}")
                if name not in values:
                    raise WorkflowError(f"no value for placeholder %{name}% at {where}")
                return copy.deepcopy(values[name])
            inside = [m for m in _INSIDE.findall(node) if m in PLACEHOLDERS]
            if inside:
                # Splicing text into a string would turn numbers into strings; refuse.
                raise WorkflowError(f"placeholder %{inside[0]}% at {where} must be the whole value")
        return node

    filled = fill(dict(template), "$")
    assert isinstance(filled, dict)
    return filled
