"""Bearer JWTs: what is accepted, and how every refusal reads (401 problem JSON)."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest

from taleforge.api.auth import InvalidCredentials, issue_token, verify_token
from taleforge.api.settings import DEV_JWT_SECRET

SECRET = DEV_JWT_SECRET


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_gives_its_subject() -> None:
    user = uuid.uuid4()
    assert (
        verify_token(issue_token(user, secret=SECRET), secret=SECRET, audience="authenticated").id
        == user
    )


@pytest.mark.parametrize(
    ("token_of", "reason"),
    [
        (lambda u: issue_token(u, secret=SECRET, now=time.time() - 7200), "expired"),
        (lambda u: issue_token(u, secret=SECRET, audience="someone-else"), "audience"),
        (lambda u: issue_token(u, secret="another-secret-that-is-long-enough-000"), "signature"),
        (lambda u: issue_token(u, secret=SECRET)[:-3] + "abc", "signature"),
        (
            lambda u: (
                f"{_b64({'alg': 'none', 'typ': 'JWT'})}."
                f"{_b64({'sub': str(u), 'aud': 'authenticated', 'exp': int(time.time()) + 60})}."
            ),
            "HS256",
        ),
        (
            lambda u: jwt.encode({"aud": "authenticated", "exp": int(time.time()) + 60}, SECRET),
            "'sub'",
        ),
        (lambda u: jwt.encode({"sub": str(u), "aud": "authenticated"}, SECRET), "'exp'"),
        (
            lambda u: jwt.encode(
                {"sub": "not-a-uuid", "aud": "authenticated", "exp": int(time.time()) + 60},
                SECRET,
            ),
            "user id",
        ),
        (lambda u: "not.a.jwt", "malformed"),
    ],
    ids=[
        "expired",
        "audience",
        "secret",
        "tampered",
        "alg-none",
        "no-sub",
        "no-exp",
        "sub",
        "junk",
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token_of, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidCredentials) as caught:
        verify_token(token_of(uuid.uuid4()), secret=SECRET, audience="authenticated")
    assert reason in caught.value.reason


def _assert_401_problem(response: httpx.Response, says: str) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["type"]
    assert says in body["detail"]


async def test_missing_header_is_a_401_problem(client: httpx.AsyncClient) -> None:
    _assert_401_problem(await client.get(f"/api/turns/{uuid.uuid4()}"), "Authorization")


async def test_wrong_scheme_is_a_401_problem(client: httpx.AsyncClient) -> None:
    response = await client.get(
        f"/api/turns/{uuid.uuid4()}", headers={"Authorization": "Basic eDp5"}
    )
    _assert_401_problem(response, "Authorization")


async def test_expired_token_is_a_401_problem(client: httpx.AsyncClient) -> None:
    token = issue_token(uuid.uuid4(), secret=SECRET, now=time.time() - 7200)
    response = await client.post(
        "/api/sessions", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    _assert_401_problem(response, "expired")


async def test_alg_none_is_a_401_problem(client: httpx.AsyncClient) -> None:
    claims = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": int(time.time()) + 60}
    token = f"{_b64({'alg': 'none'})}.{_b64(claims)}."
    response = await client.get(
        f"/api/turns/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
    )
    _assert_401_problem(response, "HS256")


async def test_a_valid_token_passes(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.get(f"/api/turns/{uuid.uuid4()}", headers=auth)
    assert response.status_code == 404  # authenticated; the (empty) read model has no such turn
