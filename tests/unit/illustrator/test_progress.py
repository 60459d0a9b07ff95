"""Overall image progress from ComfyUI's `progress` / `progress_state` events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from taleforge.illustrator.adapters.comfyui import ComfyUIBackend
from taleforge.illustrator.adapters.comfyui_progress import PromptProgress, RenderProgress
from taleforge.illustrator.rendering import ForwardOnly

NODES = ["4", "5", "6", "7", "3", "8", "9"]  # the scene workflow, in execution order


def _state(prompt_id: str, nodes: dict[str, tuple[str, float, float]]) -> dict[str, Any]:
    """A `progress_state` data block as ComfyUI's WebUIProgressHandler builds it."""
    return {
        "prompt_id": prompt_id,
        "nodes": {
            node_id: {
                "value": value,
                "max": maximum,
                "state": state,
                "node_id": node_id,
                "prompt_id": prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, (state, value, maximum) in nodes.items()
        },
    }


def _comfyui_run(steps: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """The events of one uncached run, in the order ComfyUI sends them."""
    registry: dict[str, tuple[str, float, float]] = {}
    events: list[tuple[str, dict[str, Any]]] = [("execution_cached", {"nodes": []})]
    for node_id in NODES:
        registry[node_id] = ("running", 0.0, 1.0)
        events.append(("progress_state", _state("p", registry)))
        if node_id == "3":
            for step in range(1, steps + 1):
                registry[node_id] = ("running", step, steps)
                events.append(("progress_state", _state("p", registry)))
                events.append(("progress", {"value": step, "max": steps, "node": "3"}))
        registry[node_id] = ("finished", registry[node_id][2], registry[node_id][2])
        events.append(("progress_state", _state("p", registry)))
    return events


def _fold(tracker: PromptProgress, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return [p for kind, data in events if (p := tracker.observe(kind, data)) is not None]


def test_progress_state_run_moves_forward_without_duplicates_and_ends_full() -> None:
    sent = _fold(PromptProgress(NODES), _comfyui_run())
    assert sent[-1] == RenderProgress(100, 100, 7, 7)
    pairs = [(p.value, p.nodes_done) for p in sent]
    assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs)
    assert all(p.max == 100 and p.nodes_total == 7 for p in sent)
    # The duplicate `progress` frame after each sampler progress_state adds nothing.
    assert len(sent) == len({(p.value, p.nodes_done) for p in sent})
    assert 0 < sent[0].value < 100


def test_plain_progress_still_moves_the_bar_on_servers_without_progress_state() -> None:
    tracker = PromptProgress(NODES)
    sent = _fold(tracker, [(k, d) for k, d in _comfyui_run(steps=5) if k == "progress"])
    # The sampler is 1 of 7 nodes; at 5/5 it is still running, so not a whole node yet.
    assert [(p.value, p.nodes_done) for p in sent] == [(2, 0), (5, 0), (8, 0), (11, 0), (14, 0)]
    assert tracker.complete() == RenderProgress(100, 100, 7, 7)
    assert tracker.complete() is None  # nothing new


def test_cached_nodes_count_as_done_and_unknown_nodes_are_ignored() -> None:
    tracker = PromptProgress(NODES)
    first = tracker.observe("execution_cached", {"nodes": ["4", "5", "7"]})
    assert first == RenderProgress(42, 100, 3, 7)
    # A group node's child (not in our workflow) and nonsense values do not count.
    assert tracker.observe("progress_state", _state("p", {"12.0.3": ("finished", 1, 1)})) is None
    assert tracker.observe("progress", {"node": "3", "value": 1, "max": 0}) is None
    # A running node never goes back, and never completes before it finishes.
    assert tracker.observe("progress", {"node": "3", "value": 9, "max": 10}) == RenderProgress(
        55, 100, 3, 7
    )
    assert tracker.observe("progress", {"node": "3", "value": 2, "max": 10}) is None
    assert tracker.observe("progress", {"node": "3", "value": 10, "max": 10}) == RenderProgress(
        57, 100, 3, 7
    )
    assert tracker.observe("executed", {"node": "3"}) == RenderProgress(57, 100, 4, 7)


def test_forward_only_drops_repeats_and_anything_that_goes_back() -> None:
    forward = ForwardOnly()
    assert forward.admits(RenderProgress(40, 100, 3, 7))
    assert not forward.admits(RenderProgress(40, 100, 3, 7))
    # A run re-dispatched to another ComfyUI starts again from 0: held back until it catches up.
    assert not forward.admits(RenderProgress(14, 100, 1, 7))
    assert not forward.admits(RenderProgress(45, 100, 2, 7))
    assert forward.admits(RenderProgress(45, 100, 3, 7))
    assert forward.admits(RenderProgress(100, 100, 7, 7))


async def test_broadcast_progress_state_of_other_prompts_is_dropped() -> None:
    backend = ComfyUIBackend("http://comfyui.invalid")
    ours: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    backend._watchers["ours"] = ours
    frame = {"type": "progress_state", "data": _state("someone-else", {"3": ("running", 1, 4)})}
    backend._dispatch(json.dumps(frame))
    assert ours.empty()
    frame["data"] = _state("ours", {"3": ("running", 1, 4)})
    backend._dispatch(json.dumps(frame))
    assert ours.get_nowait()[0] == "progress_state"
    await backend.aclose()
