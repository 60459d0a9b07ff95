"""Sessions as a whole on real Postgres: rename, delete (with the events that come after),
save, load (the story line moves), and each event applied once however often it arrives."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taleforge.contracts import (
    ImageRequested,
    NarrationCompleted,
    SaveCreated,
    SaveDeleted,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
    TokenUsage,
    TurnRequested,
)
from taleforge.persistence.adapters.repository import Repository
from taleforge.persistence.projection import EventRejected

from .conftest import Story
from .test_projection import count, row, rows

pytestmark = pytest.mark.integration


async def narrated(repo: Repository, story: Story, text: str = "I go on.") -> TurnRequested:
    turn = story.turn(text)
    await repo.apply_event(turn)
    await repo.apply_event(
        NarrationCompleted(
            **story.ids(turn.turn_id),
            text=f"Narration of: {text}",
            model="m",
            usage=TokenUsage(input_tokens=10, output_tokens=5, total_tokens=15),
        )
    )
    return turn


async def line(repo: Repository, story: Story) -> list[str]:
    found = await rows(
        repo,
        "SELECT input_text FROM turns WHERE session_id = :s AND in_story ORDER BY seq",
        s=story.session_id,
    )
    return [r["input_text"] for r in found]


async def test_rename_changes_the_title_once(repo: Repository, story: Story) -> None:
    await repo.apply_event(story.started())
    renamed = SessionRenamed(session_id=story.session_id, user_id=story.user_id, title="Fog")
    assert await repo.apply_event(renamed)
    assert not await repo.apply_event(renamed)  # redelivered: already applied
    session = await row(repo, "SELECT * FROM story_sessions WHERE id = :id", id=story.session_id)
    assert session["title"] == "Fog" and session["updated_at"] == renamed.occurred_at


async def test_renaming_another_players_session_is_rejected(repo: Repository, story: Story) -> None:
    await repo.apply_event(story.started())
    with pytest.raises(EventRejected, match="belongs to another user"):
        await repo.apply_event(
            SessionRenamed(session_id=story.session_id, user_id=uuid.uuid4(), title="Mine now")
        )
    with pytest.raises(EventRejected, match="unknown session"):
        await repo.apply_event(
            SessionRenamed(session_id=uuid.uuid4(), user_id=story.user_id, title="Nowhere")
        )
    session = await row(
        repo, "SELECT title FROM story_sessions WHERE id = :id", id=story.session_id
    )
    assert session["title"] == "The Lighthouse"


async def test_delete_removes_everything_and_later_events_are_ignored(
    repo: Repository, story: Story
) -> None:
    other = Story()
    await repo.apply_event(other.started())
    await repo.apply_event(story.started())
    done = await narrated(repo, story)
    image_id = uuid.uuid4()
    await repo.apply_event(
        ImageRequested(**story.ids(done.turn_id), image_id=image_id, prompt="a lighthouse")
    )
    await repo.apply_event(
        SaveCreated(**story.ids(done.turn_id), save_id=uuid.uuid4(), title="Before the storm")
    )
    in_flight = story.turn("One more step.")
    await repo.apply_event(in_flight)

    deleted = SessionDeleted(session_id=story.session_id, user_id=story.user_id)
    assert await repo.apply_event(deleted)

    for table in ("turns", "images", "saves"):
        assert await rows(repo, f"SELECT id FROM {table} WHERE user_id = :u", u=story.user_id) == []
    assert await count(repo, "story_sessions") == 1  # the other player's
    tomb = await row(repo, "SELECT * FROM deleted_sessions")
    assert (tomb["session_id"], tomb["user_id"]) == (story.session_id, story.user_id)

    # The turn in flight finishes, and the player even sends another: recorded, not applied,
    # not dead-lettered; the tokens spent still count.
    late = NarrationCompleted(
        **story.ids(in_flight.turn_id),
        text="Too late.",
        model="m",
        usage=TokenUsage(input_tokens=7, output_tokens=3, total_tokens=10),
    )
    assert await repo.apply_batch([(late, 10), (story.turn("Hello?"), 11)]) == [True, True]
    again = SessionDeleted(session_id=story.session_id, user_id=story.user_id)
    assert await repo.apply_event(again)
    assert await count(repo, "turns") == 0
    assert await count(repo, "dead_letters") == 0
    ledger = await row(repo, "SELECT completed_turns, total_tokens FROM usage_ledger")
    assert (ledger["completed_turns"], ledger["total_tokens"]) == (2, 25)


async def test_deleting_another_players_session_is_rejected(repo: Repository, story: Story) -> None:
    await repo.apply_event(story.started())
    with pytest.raises(EventRejected, match="belongs to another user"):
        await repo.apply_event(SessionDeleted(session_id=story.session_id, user_id=uuid.uuid4()))
    assert await count(repo, "story_sessions") == 1
    assert await count(repo, "deleted_sessions") == 0


async def test_a_save_records_its_turn_and_is_deleted_once(repo: Repository, story: Story) -> None:
    await repo.apply_event(story.started())
    turn = await narrated(repo, story)
    save = SaveCreated(**story.ids(turn.turn_id), save_id=uuid.uuid4(), title="At the door")
    opening = SaveCreated(
        session_id=story.session_id, user_id=story.user_id, save_id=uuid.uuid4(), title="Start"
    )
    assert await repo.apply_batch([(save, 5), (opening, 6), (save, 5)]) == [True, True, False]
    saved = await row(repo, "SELECT * FROM saves WHERE id = :id", id=save.save_id)
    assert (saved["user_id"], saved["session_id"], saved["turn_id"], saved["title"]) == (
        story.user_id,
        story.session_id,
        turn.turn_id,
        "At the door",
    )
    assert saved["created_at"] == save.occurred_at

    with pytest.raises(EventRejected, match="another user"):
        await repo.apply_event(
            SaveDeleted(session_id=story.session_id, user_id=uuid.uuid4(), save_id=save.save_id)
        )
    removed = SaveDeleted(session_id=story.session_id, user_id=story.user_id, save_id=save.save_id)
    assert await repo.apply_event(removed)
    again = SaveDeleted(session_id=story.session_id, user_id=story.user_id, save_id=save.save_id)
    assert await repo.apply_event(again)  # nothing left to delete: a no-op, not an error
    assert [r["id"] for r in await rows(repo, "SELECT id FROM saves")] == [opening.save_id]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"turn_id": uuid.uuid4()}, "unknown turn"),
        ({"user_id": uuid.uuid4()}, "belongs to another user"),
        ({"session_id": uuid.uuid4()}, "unknown session"),
    ],
)
async def test_a_save_of_nothing_real_is_rejected(
    repo: Repository, story: Story, change: dict[str, Any], reason: str
) -> None:
    await repo.apply_event(story.started())
    turn = await narrated(repo, story)
    save = SaveCreated(**story.ids(turn.turn_id), save_id=uuid.uuid4(), title="x")
    with pytest.raises(EventRejected, match=reason):
        await repo.apply_event(save.model_copy(update=change))
    assert await count(repo, "saves") == 0


async def test_loading_a_save_moves_the_story_line_and_branches_come_back(
    repo: Repository, story: Story
) -> None:
    await repo.apply_event(story.started())
    one = await narrated(repo, story, "one")
    two = await narrated(repo, story, "two")
    await narrated(repo, story, "three")

    def restore(turn: TurnRequested | None) -> SessionRestored:
        return SessionRestored(
            session_id=story.session_id,
            user_id=story.user_id,
            turn_id=turn.turn_id if turn else None,
            save_id=uuid.uuid4(),
        )

    to_one = restore(one)
    assert await repo.apply_event(to_one)
    assert not await repo.apply_event(to_one)
    assert await line(repo, story) == ["one"]
    session = await row(repo, "SELECT * FROM story_sessions WHERE id = :id", id=story.session_id)
    assert session["head_turn_id"] == one.turn_id

    # The story goes on from the save: the new turn's parent is the save's turn.
    four = await narrated(repo, story, "four")
    assert await line(repo, story) == ["one", "four"]
    parent = await row(
        repo, "SELECT parent_turn_id, seq FROM turns WHERE id = :id", id=four.turn_id
    )
    assert (parent["parent_turn_id"], parent["seq"]) == (one.turn_id, 4)

    # A save made on the first branch brings that branch back.
    await repo.apply_event(restore(two))
    assert await line(repo, story) == ["one", "two"]
    # Back to the opening: nothing is on the line, and the next turn has no parent.
    await repo.apply_event(restore(None))
    assert await line(repo, story) == []
    five = await narrated(repo, story, "five")
    assert await line(repo, story) == ["five"]
    parent = await row(repo, "SELECT parent_turn_id FROM turns WHERE id = :id", id=five.turn_id)
    assert parent["parent_turn_id"] is None
    assert await count(repo, "turns") == 5  # nothing is deleted by loading a save


async def test_loading_a_turn_of_another_session_is_rejected(
    repo: Repository, story: Story
) -> None:
    other = Story(user_id=story.user_id)
    await repo.apply_event(story.started())
    await repo.apply_event(other.started())
    foreign = await narrated(repo, other)
    mine = await narrated(repo, story)
    with pytest.raises(EventRejected, match="unknown turn"):
        await repo.apply_event(SessionRestored(**story.ids(foreign.turn_id), save_id=uuid.uuid4()))
    assert await line(repo, story) == [mine.text]
