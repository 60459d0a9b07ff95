"""Where a new story starts: the scenarios admins store, and one bundled with the service.

Admins create and change scenarios with `scenario.*` events; persistence projects them into
the `scenarios` table, which players read (published ones only, by row-level security too).
The bundled default needs no database, so a fresh install can start a story at once; a
stored scenario with the same id takes its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, MetaData, Row, Table, Text, Uuid, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

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


scenarios = Table(
    "scenarios",
    MetaData(),
    Column("id", Uuid, primary_key=True),
    Column("slug", Text),
    Column("title", Text),
    Column("summary", Text),
    Column("opening", Text),
    Column("snapshot", JSONB),
    Column("published", Boolean),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)


def from_row(row: Row[Any]) -> Scenario:
    return Scenario(
        id=row.slug,
        title=row.title,
        opening=row.opening or "",
        snapshot=ScenarioSnapshot.model_validate(row.snapshot or {}),
    )


async def find_scenario(conn: AsyncConnection, scenario_id: str | None) -> Scenario | None:
    """A published stored scenario, else a bundled one; None when neither exists."""
    wanted = scenario_id or DEFAULT_SCENARIO_ID
    query = select(scenarios).where(scenarios.c.slug == wanted, scenarios.c.published)
    row = (await conn.execute(query)).first()
    return from_row(row) if row is not None else SCENARIOS.get(wanted)


async def published_scenarios(conn: AsyncConnection) -> list[Scenario]:
    """What a player can start: the stored published scenarios and the bundled ones."""
    rows = (await conn.execute(select(scenarios).where(scenarios.c.published))).all()
    stored = {row.slug: from_row(row) for row in rows}
    return sorted(
        {**SCENARIOS, **stored}.values(), key=lambda s: (s.id != DEFAULT_SCENARIO_ID, s.title)
    )
