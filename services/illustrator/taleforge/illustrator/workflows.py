"""ComfyUI workflow templates with SillyTavern-style placeholders, filled in parsed JSON.

A template is an API-format workflow (`{node_id: {"class_type", "inputs"}}`) in which a
value may be exactly a quoted placeholder such as `"%seed%"`. Filling walks the parsed JSON
and swaps the whole value, so a seed stays an int and a prompt containing quotes or `%`
cannot break the JSON. One template per image kind ships in `workflows/<kind>.json`;
operators replace them through the template bucket (see `templates.py`), and every
template is validated before it is accepted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

# The set SillyTavern's ComfyUI integration fills, so users' workflows work unchanged.
PLACEHOLDERS = frozenset(
    {"prompt", "negative_prompt", "seed", "width", "height", "steps", "scale", "sampler", "model"}
)
# Filled with the name of the character's reference image, uploaded to the chosen server.
REFERENCE_IMAGE = "reference_image"
BUILTIN_PLACEHOLDERS = PLACEHOLDERS | {REFERENCE_IMAGE}
# Nodes that make ComfyUI produce an output (its OUTPUT_NODE flag), for the common packs.
OUTPUT_NODE_TYPES = frozenset(
    {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "Image Save"}
)
_WHOLE = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)%$")
_INSIDE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


class WorkflowError(ValueError):
    """A template that cannot be used: bad JSON, no output, unknown placeholder, no value."""


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


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def placeholders_in(template: Mapping[str, Any]) -> set[str]:
    """Names of the whole-value placeholders the template uses."""
    return {m.group(1) for _, text in _strings(template, "$") if (m := _WHOLE.match(text))}


def is_output_node(class_type: str) -> bool:
    return class_type in OUTPUT_NODE_TYPES or class_type.startswith(("Save", "Preview"))


def validate_template(data: Any, allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    """The template if the illustrator can fill and run it; else WorkflowError saying why."""
    if isinstance(data, dict) and {"nodes", "links"} <= set(data):
        raise WorkflowError(
            "this is ComfyUI's UI format (nodes/links); export it with 'Save (API Format)'"
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowError("not an API-format workflow: expected a JSON object of nodes")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"node {node_id!r} ({node['class_type']}) has no inputs object")
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                if str(value[0]) not in data:
                    raise WorkflowError(
                        f"node {node_id!r} input {name!r} links to missing node {value[0]!r}"
                    )
    if not any(is_output_node(node["class_type"]) for node in data.values()):
        raise WorkflowError("the workflow has no output node (e.g. SaveImage), so no image")
    for where, text in _strings(data, "$"):
        whole = _WHOLE.match(text)
        if whole and whole.group(1) not in allowed:
            raise WorkflowError(
                f"placeholder %{whole.group(1)}% at {where} is not one the illustrator can "
                f"fill (it fills: {', '.join(sorted(allowed))})"
            )
        inside = [m for m in _INSIDE.findall(text) if m in allowed]
        if not whole and inside:
            raise WorkflowError(f"placeholder %{inside[0]}% at {where} must be the whole value")
    return data


def parse_template(text: str | bytes, allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    """Parse and validate template JSON (e.g. a file an operator registers)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WorkflowError(f"not valid JSON: {exc}") from None
    return validate_template(data, allowed)


def fill_template(
    template: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    allowed: frozenset[str] | set[str] = BUILTIN_PLACEHOLDERS,
) -> dict[str, Any]:
    """A filled copy of `template`; every placeholder in it must be allowed and given."""
    unknown = set(values) - set(allowed)
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
                if name not in allowed:
                    raise WorkflowError(f"unknown placeholder %{name}% at {where}")
                if name not in values:
                    raise WorkflowError(f"no value for placeholder %{name}% at {where}")
                return copy.deepcopy(values[name])
            inside = [m for m in _INSIDE.findall(node) if m in allowed]
            if inside:
                # Splicing text into a string would turn numbers into strings; refuse.
                raise WorkflowError(f"placeholder %{inside[0]}% at {where} must be the whole value")
        return node

    filled = fill(dict(template), "$")
    assert isinstance(filled, dict)
    return filled
