"""Invalid requests: 422/404 problem JSON naming what is wrong, and nothing published."""

from __future__ import annotations

import uuid

import httpx
import pytest

from taleforge.contracts.events import MAX_INPUT_CHARS


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


def _fields(body: dict[str, object]) -> set[str]:
    return {e["field"] for e in body["errors"]}  # type: ignore[attr-defined,index]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"input_type": "shout", "text": "hi"}, "input_type"),
        ({"input_type": "speech", "text": "x" * (MAX_INPUT_CHARS + 1)}, "text"),
        ({"input_type": "speech", "text": " \x00\n "}, "text"),
        ({"input_type": "action"}, "text"),
        ({"input_type": "speech", "text": 42}, "text"),
        ({"input_type": "speech", "text": "hi", "mood": "grim"}, "mood"),
    ],
)
async def test_bad_progress_bodies_are_422_with_the_field(
    client: httpx.AsyncClient, auth: dict[str, str], payload: dict[str, object], field: str
) -> None:
    body = {"session_id": str(uuid.uuid4()), **payload}
    problem = _problem(await client.post("/api/story/progress", json=body, headers=auth), 422)
    assert field in _fields(problem)
    assert field in str(problem["detail"])


async def test_bad_session_id_and_missing_body(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    bad_id = {"session_id": "nope", "input_type": "continue"}
    assert "session_id" in _fields(
        _problem(await client.post("/api/story/progress", json=bad_id, headers=auth), 422)
    )
    _problem(await client.post("/api/story/progress", headers=auth), 422)
    not_json = await client.post(
        "/api/story/progress",
        content=b"{oops",
        headers={**auth, "Content-Type": "application/json"},
    )
    _problem(not_json, 422)


async def test_text_at_the_limit_is_accepted_after_normalisation() -> None:
    from taleforge.api.models import StoryProgressRequest

    text = " " + "y" * MAX_INPUT_CHARS + "\x00 "
    request = StoryProgressRequest(session_id=uuid.uuid4(), input_type="speech", text=text)
    assert request.text == "y" * MAX_INPUT_CHARS
    empty = StoryProgressRequest(session_id=uuid.uuid4(), input_type="continue", text=" \x00 ")
    assert empty.text == ""


async def test_unknown_scenario_is_422(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    problem = _problem(
        await client.post("/api/sessions", json={"scenario_id": "atlantis"}, headers=auth), 422
    )
    assert _fields(problem) == {"scenario_id"}
    assert "atlantis" in str(problem["detail"])


async def test_missing_session_is_a_404_problem(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    session_id = uuid.uuid4()
    body = {"session_id": str(session_id), "input_type": "speech", "text": "hello"}
    problem = _problem(await client.post("/api/story/progress", json=body, headers=auth), 404)
    assert str(session_id) in str(problem["detail"])


async def test_unknown_turn_image_and_route_are_404_problems(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    _problem(await client.get(f"/api/turns/{uuid.uuid4()}", headers=auth), 404)
    _problem(await client.get(f"/api/images/{uuid.uuid4()}", headers=auth), 404)
    _problem(await client.get("/api/nowhere", headers=auth), 404)


async def test_openapi_is_served(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/api/story/progress" in schema["paths"]
    assert (await client.get("/docs")).status_code == 200
