"""Replay rebuilds what players and admins did too: renames, deletes, saves, loads, the
scenario catalogue, settings changes and dead-letter retries, row for row."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import nats
import pytest
from faststream import TestApp

from taleforge.contracts import (
    DeadLetterRetried,
    Envelope,
    NarrationCompleted,
    SaveCreated,
    SaveDeleted,
    ScenarioDeleted,
    ScenarioUpserted,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
    SettingsChanged,
    event_subject,
    publish_headers,
)
from taleforge.persistence.app import create_app
from taleforge.persistence.rebuild import rebuild
from taleforge.persistence.settings import Settings

from ...support import asyncpg_dsn
from .conftest import Story
from .test_rebuild import IGNORED, TABLES, play
from .test_service import wait_for

pytestmark = pytest.mark.integration

ALL_TABLES = {**TABLES, "deleted_sessions": "session_id", "settings_changes": "event_id"}
ADMIN = uuid.uuid4()


@pytest.fixture
async def second_database_url(new_database: Callable[[], Awaitable[str]]) -> str:
    return await new_database()


async def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = {}
        for table, order in ALL_TABLES.items():
            rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            # A dead letter's serial id depends on insert order, not on the log.
            ignored = IGNORED | {"id"} if table == "dead_letters" else IGNORED
            tables[table] = [{k: v for k, v in row.items() if k not in ignored} for row in rows]
        return tables
    finally:
        await conn.close()


def completed_turns(events: list[Envelope]) -> list[uuid.UUID]:
    return [e.turn_id for e in events if isinstance(e, NarrationCompleted) and e.turn_id]


def session_life(kept: Story, gone: Story) -> list[Envelope]:
    """One session saved, loaded and renamed; another deleted with a turn still in flight."""
    events = play(kept, 3)
    first, second, _ = completed_turns(events)
    save = SaveCreated(**kept.ids(second), save_id=uuid.uuid4(), title="Halfway")
    early = SaveCreated(**kept.ids(first), save_id=uuid.uuid4(), title="Early")
    events += [
        save,
        early,
        SessionRestored(**kept.ids(second), save_id=save.save_id),
        *play_more(kept, "after the load"),
        SessionRenamed(session_id=kept.session_id, user_id=kept.user_id, title="Renamed"),
        SaveDeleted(session_id=kept.session_id, user_id=kept.user_id, save_id=early.save_id),
    ]
    doomed = play(gone, 2)
    in_flight = gone.turn("one more")
    events += [
        *doomed,
        in_flight,
        SessionDeleted(session_id=gone.session_id, user_id=gone.user_id),
        NarrationCompleted(**gone.ids(in_flight.turn_id), text="Too late.", model="m"),
    ]
    return events


def play_more(story: Story, text: str) -> list[Envelope]:
    turn = story.turn(text)
    return [turn, NarrationCompleted(**story.ids(turn.turn_id), text="On it goes.", model="m")]


def admin_life() -> list[Envelope]:
    return [
        ScenarioUpserted(user_id=ADMIN, scenario_id="moor", title="The Moor"),
        ScenarioUpserted(user_id=ADMIN, scenario_id="fen", title="The Fen", published=False),
        ScenarioUpserted(user_id=ADMIN, scenario_id="moor", title="The Moor, again"),
        ScenarioDeleted(user_id=ADMIN, scenario_id="fen"),
        SettingsChanged(user_id=ADMIN, service="narrator", changes={"model": "m2"}, revision=3),
        SettingsChanged(
            user_id=ADMIN, service="illustrator", changes={"scene": "{}"}, revision=None
        ),
    ]


async def test_a_rebuild_equals_the_live_projection_of_sessions_saves_and_admin_events(
    nats_url: str, database_url: str, second_database_url: str
) -> None:
    alice = uuid.uuid4()
    events = session_life(Story(user_id=alice), Story(user_id=alice)) + admin_life()

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    settings = Settings(nats_url=nats_url, database_url=database_url, persistence_batch_size=4)
    try:
        async with TestApp(create_app(settings)):
            for event in events:
                await js.publish(event.subject(), event.to_bytes(), headers=publish_headers(event))
            poison = await js.publish(event_subject(uuid.uuid4(), "turn.requested"), b"{oops")
            retried = await js.publish(event_subject(uuid.uuid4(), "turn.requested"), b"{oops")
            retry = DeadLetterRetried(
                user_id=ADMIN, stream_seq=poison.seq, retried_as_seq=retried.seq
            )
            await js.publish(retry.subject(), retry.to_bytes(), headers=publish_headers(retry))
            published = len(events) + 3

            async def settled() -> bool:
                conn = await asyncpg.connect(asyncpg_dsn(database_url))
                try:
                    done = await conn.fetchval(
                        "SELECT (SELECT count(*) FROM processed_events)"
                        " + (SELECT count(*) FROM dead_letters)"
                    )
                finally:
                    await conn.close()
                return bool(done == published)

            await wait_for(settled, timeout=30)

        report = await rebuild(second_database_url, nats_url, batch_size=5, progress=False)
        assert (report.events, report.dead_letters) == (published, 2)
    finally:
        await nc.close()

    live, rebuilt = await snapshot(database_url), await snapshot(second_database_url)
    assert len(live["story_sessions"]) == 1 and live["story_sessions"][0]["title"] == "Renamed"
    by_seq = sorted(live["turns"], key=lambda t: t["seq"])
    assert [t["in_story"] for t in by_seq] == [True, True, False, True]
    assert [s["title"] for s in live["saves"]] == ["Halfway"]
    assert len(live["deleted_sessions"]) == 1
    assert [s["title"] for s in live["scenarios"]] == ["The Moor, again"]
    assert len(live["settings_changes"]) == 2
    assert [(d["stream_seq"], d["retry_count"]) for d in live["dead_letters"]] == [
        (poison.seq, 1),
        (retried.seq, 0),
    ]
    for table in ALL_TABLES:
        assert rebuilt[table] == live[table], table
