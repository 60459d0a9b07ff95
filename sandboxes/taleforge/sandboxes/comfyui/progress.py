"""Per-run node progress, sent as `progress_state` the way ComfyUI's progress registry does.

Follows `comfy_execution/progress.py` (ComfyUI 0.3.4x+): a registry per prompt keeps each
touched node's `{state, value, max}`; a node starts `running` at 0/1, sampler steps set
value/max, and finishing sets value = max. After every change `WebUIProgressHandler` sends ONE
`progress_state` message holding every non-pending node of the prompt. It goes out through
`send_sync` without a sid, so unlike `progress` it reaches every connected socket, and a
client has to pick its own prompts by `prompt_id`. ComfyUI never marks a node `error` there.
"""

from __future__ import annotations

from typing import Any

RUNNING = "running"
FINISHED = "finished"


class NodeProgressRegistry:
    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._nodes: dict[str, dict[str, Any]] = {}

    def start(self, node_id: str) -> dict[str, Any]:
        self._nodes[node_id] = {"state": RUNNING, "value": 0.0, "max": 1.0}
        return self.message()

    def update(self, node_id: str, value: float, maximum: float) -> dict[str, Any]:
        self._nodes[node_id] = {"state": RUNNING, "value": value, "max": maximum}
        return self.message()

    def finish(self, node_id: str) -> dict[str, Any]:
        entry = self._nodes.setdefault(node_id, {"value": 0, "max": 1})
        entry["state"] = FINISHED
        entry["value"] = entry["max"]
        return self.message()

    def message(self) -> dict[str, Any]:
        """The `progress_state` data: every node touched so far (pending ones are not sent)."""
        return {
            "prompt_id": self.prompt_id,
            "nodes": {
                node_id: {
                    "value": entry["value"],
                    "max": entry["max"],
                    "state": entry["state"],
                    "node_id": node_id,
                    "prompt_id": self.prompt_id,
                    # No subgraph expansion in the sandbox: every node is its own display,
                    # real and (absent) parent node.
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                }
                for node_id, entry in self._nodes.items()
            },
        }
