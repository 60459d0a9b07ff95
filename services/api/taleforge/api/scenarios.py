"""Scenarios bundled with the service: where a new story starts.

A small registry for now; scenarios become events and rows of their own later.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SCENARIO_ID = "default"


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    title: str
    opening: str


SCENARIOS: dict[str, Scenario] = {
    DEFAULT_SCENARIO_ID: Scenario(
        id=DEFAULT_SCENARIO_ID,
        title="The Lantern at Greywater Ford",
        opening=(
            "Rain needles the river as dusk settles over Greywater Ford. The ferryman is "
            "gone, his lantern still swinging from the post, and on the far bank a figure "
            "in a grey cloak waits, as if it has been expecting you. Your boots are wet, "
            "your purse is light, and the village behind you has already barred its doors."
        ),
    ),
}


def find_scenario(scenario_id: str | None) -> Scenario | None:
    return SCENARIOS.get(scenario_id or DEFAULT_SCENARIO_ID)
