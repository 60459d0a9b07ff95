"""A turn as Server-Sent Events, on real NATS (STORY + LIVE) and Postgres, over real HTTP:
the whole story of a turn, resume after a dropped connection on ANOTHER replica with no gap
and no repeat, a retried narration, failure, and the waiting (non-SSE) request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NatsClient

from taleforge.contracts import TurnRequested

from .conftest import Rows
from .stream_support import SSE, FakeNarrator, SseEvent, SseReader, auth, replica

pytestmark = pytest.mark.integration

PIECES = ["The lantern ", "flickers, ", "and the river ", "answers."]


@pytest.fixture
def replicas(
    nats_url: str, migrated_database_url: str, nats_client: NatsClient
) -> Iterator[tuple[str, str]]:
    with (
        replica(nats_url, migrated_database_url) as first,
        replica(nats_url, migrated_database_url) as second,
    ):
        yield first, second


@pytest.fixture
def narrator(nats_client: NatsClient) -> FakeNarrator:
    return FakeNarrator(nats_client)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def _player_with_session(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A new player and a session of theirs in the read model."""
    player = uuid.uuid4()
    return player, await Rows(db).session(player)


async def _stream_while(
    narrating: Coroutine[Any, Any, object],
    http: httpx.AsyncClient,
    base_url: str,
    player: uuid.UUID,
    session_id: uuid.UUID,
) -> list[SseEvent]:
    """POST a turn as SSE while `narrating` runs; every event up to the end."""
    narrator_task = asyncio.create_task(narrating)
    async with http.stream(
        "POST",
        f"{base_url}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), **SSE},
    ) as response:
        events = await SseReader(response).until_end()
    await narrator_task
    return events


def _progress(session_id: uuid.UUID, text: str = "I light the lantern.") -> dict[str, str]:
    return {"session_id": str(session_id), "input_type": "action", "text": text}


async def test_a_turn_streams_every_event_in_order_and_ends(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)
    image_id = uuid.uuid4()

    async def narrate() -> TurnRequested:
        turn = await narrator.next_request(session_id)
        await narrator.started(turn)
        await narrator.deltas(turn, PIECES)
        await narrator.completed(turn, "".join(PIECES), image_ids=[image_id])
        await narrator.image_requested(turn, image_id)
        await narrator.progress(turn, image_id, 5)
        await narrator.image_completed(turn, image_id)
        return turn

    narrating = asyncio.create_task(narrate())
    async with http.stream(
        "POST",
        f"{replicas[0]}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), **SSE},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = await SseReader(response).until_end()
    turn = await narrating

    names = [e.event for e in events]
    # Live messages come before the story event they preceded (deltas before
    # narration.completed, progress before image.ready); where nothing orders the two
    # streams (narration.started vs the first delta, progress vs narration.completed and
    # image.requested) either order is right.
    unordered = ("image.progress", "narration.started")
    assert [name for name in names if name not in unordered] == [
        "turn.accepted",
        *["narration.delta"] * len(PIECES),
        "narration.completed",
        "image.requested",
        "image.ready",
        "turn.completed",
    ]
    assert names.count("image.progress") == names.count("narration.started") == 1
    assert names.index("narration.started") < names.index("narration.completed")
    assert names.index("image.progress") < names.index("image.ready")
    assert len({e.id for e in events}) == len(events), "every event has its own id"
    assert all(e.data["turn_id"] == str(turn.turn_id) for e in events)
    assert "".join(e.data["text"] for e in events if e.event == "narration.delta") == "".join(
        PIECES
    )
    assert events[-1].id and events[-1].id.endswith("-end")
    end = events[-1].data
    assert end["status"] == "completed" and end["narration"] == "".join(PIECES)
    assert end["usage"]["total_tokens"] == 70
    assert end["images"] == [
        {
            "image_id": str(image_id),
            "kind": "scene",
            "status": "completed",
            "url": f"/api/images/{image_id}",
            "error": None,
        }
    ]
    ready = next(e for e in events if e.event == "image.ready")
    assert ready.data["url"] == f"/api/images/{image_id}"


async def test_a_dropped_stream_resumes_on_another_replica_without_gap_or_repeat(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)
    first, second = replicas
    seen: list[str] = []
    last_id = None

    async with http.stream(
        "POST",
        f"{first}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), **SSE},
    ) as response:
        reader = SseReader(response)
        turn = await narrator.next_request(session_id)
        await narrator.deltas(turn, PIECES[:2])
        while len(seen) < 2:
            event = await reader.next()
            assert event is not None
            last_id = event.id
            if event.event == "narration.delta":
                seen.append(event.data["text"])
    # The connection is gone; the story goes on without the client.
    await narrator.deltas(turn, PIECES)  # the narrator's attempt 1 from the start: same pieces
    await narrator.completed(turn, "".join(PIECES))

    # Reconnect to the OTHER replica with the last id seen (as EventSource does).
    async with http.stream(
        "GET",
        f"{second}/api/turns/{turn.turn_id}/events",
        headers={**auth(player), "Last-Event-ID": str(last_id)},
    ) as response:
        assert response.status_code == 200
        rest = await SseReader(response).until_end()

    deltas = [e for e in rest if e.event == "narration.delta"]
    assert [e.event for e in rest][-2:] == ["narration.completed", "turn.completed"]
    assert "turn.accepted" not in [e.event for e in rest], "nothing already seen comes again"
    # Deltas after the last one seen, in order (the second batch restated indices 0..3).
    assert [d.data["index"] for d in deltas] == [0, 1, 2, 3]
    assert all(e.id and e.id > "" for e in rest)

    # The end was seen: coming back once more says there is nothing left (204).
    again = await http.get(
        f"{first}/api/turns/{turn.turn_id}/events",
        headers={**auth(player), "Last-Event-ID": str(rest[-1].id)},
    )
    assert again.status_code == 204


async def test_resume_by_post_with_last_event_id_and_from_the_start(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)
    first, second = replicas
    accepted = await http.post(
        f"{first}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), "Prefer": "respond-async"},
    )
    assert accepted.status_code == 202
    turn = await narrator.next_request(session_id)
    await narrator.deltas(turn, PIECES)
    await narrator.completed(turn, "".join(PIECES))

    # The events_url of the 202 replays the whole turn, on any replica.
    async with http.stream(
        "GET", f"{second}{accepted.json()['events_url']}", headers=auth(player)
    ) as response:
        whole = await SseReader(response).until_end()
    assert whole[0].event == "turn.accepted" and whole[-1].event == "turn.completed"
    assert "".join(e.data["text"] for e in whole if e.event == "narration.delta") == "".join(PIECES)

    # A fetch-based client re-POSTs with Last-Event-ID: the same turn resumes, no new one.
    after_second_delta = [e for e in whole if e.event == "narration.delta"][1].id
    async with http.stream(
        "POST",
        f"{second}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), **SSE, "Last-Event-ID": str(after_second_delta)},
    ) as response:
        rest = await SseReader(response).until_end()
    assert [e.data.get("text") for e in rest if e.event == "narration.delta"] == PIECES[2:]
    assert rest[-1].event == "turn.completed"


async def test_a_retried_narration_resets_and_stale_pieces_are_dropped(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)

    async def narrate() -> None:
        turn = await narrator.next_request(session_id)
        await narrator.deltas(turn, ["Once ", "upon "], attempt=1)  # then the model stalls
        await narrator.deltas(turn, ["A dark ", "night."], attempt=2)
        await narrator.deltas(turn, ["late!"], attempt=1)  # a zombie attempt, still talking
        await narrator.completed(turn, "A dark night.")

    events = await _stream_while(narrate(), http, replicas[0], player, session_id)

    deltas = [e.data for e in events if e.event == "narration.delta"]
    assert [(d["attempt"], d["reset"], d["text"]) for d in deltas] == [
        (1, False, "Once "),
        (1, False, "upon "),
        (2, True, "A dark "),
        (2, False, "night."),
    ]
    # What a client shows: text since the last reset = the narration.
    shown = ""
    for delta in deltas:
        shown = delta["text"] if delta["reset"] else shown + delta["text"]
    assert shown == "A dark night." == events[-1].data["narration"]


async def test_a_failed_turn_ends_the_stream_with_turn_failed(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)

    async def narrate() -> None:
        turn = await narrator.next_request(session_id)
        await narrator.failed(turn, "The storyteller could not be reached.")

    events = await _stream_while(narrate(), http, replicas[0], player, session_id)
    assert [e.event for e in events] == ["turn.accepted", "turn.failed"]
    assert events[-1].data["status"] == "failed"
    assert events[-1].data["error"] == "The storyteller could not be reached."
    assert events[-1].data["code"] == "provider_unavailable"


async def test_a_plain_post_waits_for_the_result_or_answers_202(  # type: ignore[no-untyped-def]
    replicas, narrator, http, db
) -> None:
    player, session_id = await _player_with_session(db)
    image_id = uuid.uuid4()

    async def narrate() -> None:
        turn = await narrator.next_request(session_id)
        await narrator.deltas(turn, PIECES)
        await narrator.completed(turn, "".join(PIECES), image_ids=[image_id])
        await narrator.image_requested(turn, image_id)
        await narrator.image_failed(turn, image_id)

    narrating = asyncio.create_task(narrate())
    done = await http.post(
        f"{replicas[1]}/api/story/progress", json=_progress(session_id), headers=auth(player)
    )
    await narrating
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["status"] == "completed" and result["narration"] == "".join(PIECES)
    assert result["usage"]["output_tokens"] == 20
    assert result["images"][0]["status"] == "failed"
    assert result["images"][0]["error"] == "the painter spilled the ink"

    # Nobody narrates the next one: after the (short) wait it is a 202 with where to follow.
    pending = await http.post(
        f"{replicas[1]}/api/story/progress",
        json=_progress(session_id, "I wait."),
        headers={**auth(player), "Prefer": "wait=0.3"},
    )
    assert pending.status_code == 202, pending.text
    body = pending.json()
    assert body["status"] == "pending" and body["events_url"].startswith(
        f"/api/turns/{body['turn_id']}/events?last_event_id="
    )
    assert pending.headers["location"] == f"/api/turns/{body['turn_id']}"


async def test_cursors_are_checked(replicas, narrator, http, db) -> None:  # type: ignore[no-untyped-def]
    player, session_id = await _player_with_session(db)
    accepted = await http.post(
        f"{replicas[0]}/api/story/progress",
        json=_progress(session_id),
        headers={**auth(player), "Prefer": "respond-async"},
    )
    turn_id = accepted.json()["turn_id"]
    events_url = accepted.json()["events_url"]

    bad = await http.get(
        f"{replicas[0]}/api/turns/{turn_id}/events",
        headers={**auth(player), "Last-Event-ID": "not-an-id"},
    )
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    # Someone else's cursor, or a cursor of another turn, looks like nothing at all.
    stranger = await http.get(f"{replicas[0]}{events_url}", headers=auth(uuid.uuid4()))
    assert stranger.status_code == 404
    other_turn = await http.get(
        f"{replicas[0]}/api/turns/{uuid.uuid4()}/events?last_event_id="
        + events_url.rpartition("=")[2],
        headers=auth(player),
    )
    assert other_turn.status_code == 404
    # Without a cursor, a turn not (yet) in the read model is a 404 too.
    unknown = await http.get(f"{replicas[0]}/api/turns/{uuid.uuid4()}/events", headers=auth(player))
    assert unknown.status_code == 404
