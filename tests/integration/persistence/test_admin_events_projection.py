"""Admin events on real Postgres: the scenario catalogue, the settings history and
dead-letter retries, each applied once."""

from __future__ import annotations

import uuid

import pytest

from taleforge.contracts import (
    NO_SESSION,
    DeadLetterRetried,
    ScenarioDeleted,
    ScenarioUpserted,
    SettingsChanged,
)
from taleforge.contracts.events import Character, ImagePolicy, ScenarioSnapshot
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.admin_projection import scenario_row_id

from .test_projection import count, row, rows

pytestmark = pytest.mark.integration

ADMIN = uuid.uuid4()


def upserted(**values: object) -> ScenarioUpserted:
    fields: dict[str, object] = {
        "user_id": ADMIN,
        "scenario_id": "lighthouse",
        "title": "The Lighthouse",
        "opening": "Fog rolls in.",
        "scenario": ScenarioSnapshot(
            world="A rock in a cold sea.",
            player_character=Character(name="Ash"),
            image_policy=ImagePolicy.NEVER,
        ),
        **values,
    }
    return ScenarioUpserted.model_validate(fields)


async def test_a_scenario_is_created_replaced_and_deleted(repo: Repository) -> None:
    first = upserted()
    assert first.session_id == NO_SESSION
    assert first.subject() == "story.events.admin.scenario.upserted"
    assert await repo.apply_event(first)
    assert not await repo.apply_event(first)
    scenario = await row(repo, "SELECT * FROM scenarios")
    assert scenario["id"] == scenario_row_id("lighthouse")
    assert (scenario["slug"], scenario["title"], scenario["published"]) == (
        "lighthouse",
        "The Lighthouse",
        True,
    )
    assert scenario["snapshot"]["world"] == "A rock in a cold sea."
    assert scenario["snapshot"]["image_policy"] == "never"

    second = upserted(title="The Dark Lighthouse", published=False, scenario=ScenarioSnapshot())
    await repo.apply_event(second)
    scenario = await row(repo, "SELECT * FROM scenarios")
    assert (scenario["title"], scenario["published"], scenario["snapshot"]["world"]) == (
        "The Dark Lighthouse",
        False,
        "",
    )
    assert scenario["created_at"] == first.occurred_at
    assert scenario["updated_at"] == second.occurred_at

    await repo.apply_event(ScenarioDeleted(user_id=ADMIN, scenario_id="lighthouse"))
    await repo.apply_event(ScenarioDeleted(user_id=ADMIN, scenario_id="lighthouse"))
    assert await count(repo, "scenarios") == 0


async def test_settings_changes_are_kept_in_order(repo: Repository) -> None:
    changes = [
        SettingsChanged(
            user_id=ADMIN, service="narrator", changes={"model": "gpt-x", "temperature": "0.3"}
        ),
        SettingsChanged(user_id=ADMIN, service="narrator", changes={"model": None}, revision=7),
    ]
    assert await repo.apply_batch([(changes[0], 1), (changes[1], 2), (changes[0], 1)]) == [
        True,
        True,
        False,
    ]
    history = await rows(repo, "SELECT * FROM settings_changes ORDER BY changed_at")
    assert [(h["service"], h["changes"], h["revision"]) for h in history] == [
        ("narrator", {"model": "gpt-x", "temperature": "0.3"}, None),
        ("narrator", {"model": None}, 7),
    ]
    assert {h["changed_by"] for h in history} == {ADMIN}


async def test_a_retry_is_marked_on_its_dead_letter(repo: Repository) -> None:
    await repo.record_dead_letter(
        stream_seq=5,
        subject="story.events.x.turn.requested",
        payload=b"{}",
        reason="bad",
        delivery_count=1,
    )
    first = DeadLetterRetried(user_id=ADMIN, stream_seq=5, retried_as_seq=9)
    second = DeadLetterRetried(user_id=ADMIN, stream_seq=5, retried_as_seq=12)
    await repo.apply_event(first)
    await repo.apply_event(first)
    await repo.apply_event(second)
    letter = await row(repo, "SELECT * FROM dead_letters")
    assert (letter["retry_count"], letter["retried_as_seq"]) == (2, 12)
    assert letter["last_retried_at"] == second.occurred_at
    # No such dead letter (e.g. a rebuild where it applied fine): recorded, nothing marked.
    assert await repo.apply_event(
        DeadLetterRetried(user_id=ADMIN, stream_seq=77, retried_as_seq=78)
    )
    assert await count(repo, "dead_letters") == 1
