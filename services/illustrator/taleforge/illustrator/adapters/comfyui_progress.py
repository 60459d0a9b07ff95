"""One prompt's overall progress, read from ComfyUI's websocket events.

ComfyUI reports progress per node: `progress` (value/max of the node running now, e.g.
sampler steps; sent to our clientId) and, since 0.3.4x, `progress_state` (every node the
prompt has touched, `running` or `finished`, with value/max; broadcast to every socket, so it
is routed by its `prompt_id`). Neither says how far the whole image is, and the running
node's value/max starts again at 0 with each node, so a bar fed with them would jump back.

Here every node of the workflow counts the same: finished (or cached) is 1, running is its
value/max, pending is 0. The overall share is floored to a percentage, so 100 means the run
ended, and the node shares only ever grow, so the percentage never goes back. Older servers
without `progress_state` still move it through `progress`, `executed` and the final
`executing` with `node: null`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PERCENT = 100


@dataclass(frozen=True)
class RenderProgress:
    """How far one render is: `value` of `max` overall, and whole nodes done of total."""

    value: int
    max: int
    nodes_done: int
    nodes_total: int


class PromptProgress:
    """Folds one prompt's events into a RenderProgress that only moves forward."""

    def __init__(self, node_ids: Iterable[str]) -> None:
        self._share: dict[str, float] = {str(n): 0.0 for n in node_ids}
        self._done: set[str] = set()
        self._last: RenderProgress | None = None

    def observe(self, kind: str, data: dict[str, Any]) -> RenderProgress | None:
        """Take one event of the prompt; the new progress if it moved, else None."""
        if kind == "progress_state":
            for node_id, node in (data.get("nodes") or {}).items():
                if not isinstance(node, dict):
                    continue
                if node.get("state") == "finished":
                    self._finish(node_id)
                elif node.get("state") == "running":
                    self._advance(node_id, node.get("value"), node.get("max"))
        elif kind == "progress":
            self._advance(data.get("node"), data.get("value"), data.get("max"))
        elif kind == "execution_cached":
            for node_id in data.get("nodes") or []:
                self._finish(node_id)
        elif kind == "executed":
            self._finish(data.get("node"))
        return self._moved()

    def complete(self) -> RenderProgress | None:
        """The run ended well: every node is done (some may never have reported)."""
        for node_id in self._share:
            self._finish(node_id)
        return self._moved()

    def _finish(self, node_id: Any) -> None:
        # Nodes outside the workflow (children of an expanded group node) are not counted.
        if str(node_id) in self._share:
            self._share[str(node_id)] = 1.0
            self._done.add(str(node_id))

    def _advance(self, node_id: Any, value: Any, maximum: Any) -> None:
        key = str(node_id)
        if key not in self._share or key in self._done:
            return
        try:
            share = float(value) / float(maximum)
        except (TypeError, ValueError, ZeroDivisionError):
            return
        if math.isfinite(share):
            # Clamped below 1: only finishing completes a node.
            self._share[key] = max(self._share[key], min(share, 0.999))

    def _moved(self) -> RenderProgress | None:
        total = len(self._share)
        overall = sum(self._share.values()) / total if total else 1.0
        now = RenderProgress(math.floor(overall * PERCENT), PERCENT, len(self._done), total)
        if now == self._last or (now.value == 0 and now.nodes_done == 0):
            return None
        self._last = now
        return now
