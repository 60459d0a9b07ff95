"""Scenarios bundled with the service: where a new story starts.

A small registry for now; scenarios become events and rows of their own later.
"""

from __future__ import annotations

from dataclasses import dataclass

from taleforge.contracts.events import Character, ImagePolicy, ScenarioSnapshot

DEFAULT_SCENARIO_ID = "default"


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    title: str
    opening: str
    # What travels in `SessionStarted`, so the narrator (and a replay) needs no registry.
    snapshot: ScenarioSnapshot


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
        snapshot=ScenarioSnapshot(
            world=(
                "Greywater Ford is a river crossing on the edge of the Fenmarch, a land of reed "
                "beds, drowned chapels and old toll roads. Folk here fear the river spirits and "
                "the grey-cloaked Wardens who once kept the ford. Magic is rare, quiet and costly."
            ),
            tone="Melancholy folk horror with moments of warmth; slow-burning dread, never gore.",
            rules=[
                "The river remembers every promise made beside it.",
                "Nobody crosses the ford after dark without a lantern.",
            ],
            player_character=Character(
                name="Wren",
                description=(
                    "A travelling tinker with a quick tongue, a light purse and a bad knee."
                ),
            ),
            characters=[
                Character(
                    name="The Grey Warden",
                    description="A cloaked figure on the far bank; patient, courteous, not alive.",
                ),
                Character(
                    name="Old Maddock",
                    description="The missing ferryman; gruff, superstitious, owes everyone money.",
                ),
            ],
            image_policy=ImagePolicy.EVERY_TURN,
        ),
    ),
}


def find_scenario(scenario_id: str | None) -> Scenario | None:
    return SCENARIOS.get(scenario_id or DEFAULT_SCENARIO_ID)
