"""Workflow validation with the error shapes of ComfyUI's `execution.validate_prompt`.

A rejected prompt becomes HTTP 400 `{"error": {...}, "node_errors": {...}}`: `error` has
`type`, `message`, `details`, `extra_info`; `node_errors` maps node id to
`{"errors": [...], "dependent_outputs": [...], "class_type": ...}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taleforge.sandboxes.comfyui.nodes import NodeClass


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


@dataclass
class Validation:
    error: dict[str, Any] | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def is_link(value: Any) -> bool:
    """An input wired to another node's output: `[node_id, output_index]`."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _check_value(name: str, spec: list[Any], value: Any) -> dict[str, Any] | None:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list):
        if value not in kind:
            shown = ", ".join(map(str, kind[:10]))
            return _error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in [{shown}]",
                input_name=name,
                input_config=spec,
                received_value=value,
            )
        return None
    if kind in ("INT", "FLOAT"):
        numeric = (int,) if kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric):
            return _error(
                "invalid_input_type",
                f"Failed to convert an input value to a {kind} value",
                f"{name}, {value!r}",
                input_name=name,
                input_config=spec,
                received_value=value,
            )
        if "min" in opts and value < opts["min"]:
            return _error(
                "value_smaller_than_min",
                f"Value {value} smaller than min of {opts['min']}",
                f"{name}",
                input_name=name,
                input_config=spec,
                received_value=value,
            )
        if "max" in opts and value > opts["max"]:
            return _error(
                "value_bigger_than_max",
                f"Value {value} bigger than max of {opts['max']}",
                f"{name}",
                input_name=name,
                input_config=spec,
                received_value=value,
            )
        return None
    if kind == "STRING" and not isinstance(value, str):
        return _error(
            "invalid_input_type",
            "Failed to convert an input value to a STRING value",
            f"{name}, {value!r}",
            input_name=name,
            input_config=spec,
            received_value=value,
        )
    return None


def _node_input_errors(
    node_id: str, prompt: dict[str, Any], classes: dict[str, NodeClass], seen: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """Errors of this node and of every node it links to, keyed by node id."""
    if node_id in seen:
        return {}
    seen.add(node_id)
    node = prompt[node_id]
    cls = classes[node["class_type"]]
    inputs = node.get("inputs", {})
    found: dict[str, list[dict[str, Any]]] = {}
    own: list[dict[str, Any]] = []
    if not isinstance(inputs, dict):
        own.append(_error("invalid_input_type", "Node inputs must be an object", f"{node_id}"))
        return {node_id: own}
    for name, spec in cls.required.items():
        if name not in inputs:
            own.append(
                _error(
                    "required_input_missing",
                    "Required input is missing",
                    name,
                    input_name=name,
                )
            )
            continue
        value = inputs[name]
        if isinstance(value, list) and not is_link(value) and not isinstance(spec[0], list):
            own.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [string, int]",
                    f"{name}",
                    input_name=name,
                    received_value=value,
                )
            )
            continue
        if is_link(value):
            source_id = str(value[0])
            source = prompt.get(source_id)
            if not isinstance(source, dict) or source.get("class_type") not in classes:
                own.append(
                    _error(
                        "bad_linked_input",
                        f"Linked node '{source_id}' does not exist",
                        f"{name}, {value!r}",
                        input_name=name,
                        received_value=value,
                    )
                )
                continue
            source_cls = classes[source["class_type"]]
            slot = value[1]
            received = source_cls.outputs[slot] if 0 <= slot < len(source_cls.outputs) else None
            if received != spec[0]:
                own.append(
                    _error(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({spec[0]})",
                        input_name=name,
                        received_type=received,
                        linked_node=value,
                    )
                )
                continue
            for other, errors in _node_input_errors(source_id, prompt, classes, seen).items():
                found.setdefault(other, []).extend(errors)
            continue
        problem = _check_value(name, spec, value)
        if problem:
            own.append(problem)
    if own:
        found.setdefault(node_id, []).extend(own)
    return found


def validate_prompt(prompt: Any, classes: dict[str, NodeClass]) -> Validation:
    if not isinstance(prompt, dict):
        return Validation(
            _error("invalid_prompt", "Cannot execute because the prompt is not a JSON object.")
        )
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return Validation(
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            )
        class_type = node["class_type"]
        if class_type not in classes:
            return Validation(
                _error(
                    "missing_node_type",
                    f"Node '{class_type}' not found. The custom node may not be installed.",
                    f"Node ID '#{node_id}'",
                    node_id=node_id,
                    class_type=class_type,
                )
            )
    outputs = [nid for nid, node in prompt.items() if classes[node["class_type"]].output_node]
    if not outputs:
        return Validation(_error("prompt_no_outputs", "Prompt has no outputs"))

    node_errors: dict[str, Any] = {}
    good_outputs: list[str] = []
    for output_id in outputs:
        errors = _node_input_errors(output_id, prompt, classes, set())
        if not errors:
            good_outputs.append(output_id)
        for node_id, node_errs in errors.items():
            entry = node_errors.setdefault(
                node_id,
                {"errors": node_errs, "dependent_outputs": [], "class_type": ""},
            )
            entry["class_type"] = prompt[node_id]["class_type"]
            entry["dependent_outputs"].append(output_id)
    if not good_outputs:
        details = "\n".join(
            f"{prompt[nid]['class_type']} {nid}: {e['message']}: {e['details']}"
            for nid, entry in node_errors.items()
            for e in entry["errors"]
        )
        return Validation(
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            node_errors=node_errors,
        )
    return Validation(None, good_outputs, node_errors)
