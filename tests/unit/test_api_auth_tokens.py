"""Supabase access tokens: HS256 with the secret, ES256/RS256 from a JWKS (served for real),
key rotation, and every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from taleforge.api.auth import (
    AdminRule,
    InvalidCredentials,
    JwksKeys,
    KeysUnavailable,
    TokenVerifier,
    issue_token,
)
from taleforge.api.deps import AdminUser, CurrentUser
from taleforge.api.problems import install_problem_handlers
from taleforge.sandboxes.serving import serve_in_thread

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
ISSUER = "https://project.supabase.co/auth/v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user), "aud": "authenticated", "iat": now, "exp": now + 60, **extra}


class Signer:
    """An asymmetric key pair with a kid, as the auth server holds it."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        public = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], kid: str | None = "own") -> str:
        headers = {"kid": self.kid if kid == "own" else kid} if kid is not None else {}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


class JwksServer:
    """A JWKS endpoint whose key set a test can rotate, counting the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.failing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.hits += 1
        status = 500 if self.failing else 200
        body = json.dumps({"keys": self.keys}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[JwksServer, str]]:
    server = JwksServer()
    with serve_in_thread(server) as url:
        yield server, f"{url}/auth/v1/.well-known/jwks.json"


@pytest.fixture
def jwks(jwks_server: tuple[JwksServer, str]) -> JwksServer:
    server, _ = jwks_server
    server.keys, server.hits, server.failing = [], 0, False
    return server


@pytest.fixture
def jwks_url(jwks_server: tuple[JwksServer, str]) -> str:
    return jwks_server[1]


def _verifier(jwks_url: str | None = None, **overrides: Any) -> TokenVerifier:
    keys = (
        JwksKeys(jwks_url, refresh_cooldown_s=overrides.pop("cooldown", 0.0)) if jwks_url else None
    )
    values: dict[str, Any] = {"secret": SECRET, "audience": "authenticated", "jwks": keys}
    return TokenVerifier(**{**values, **overrides})


async def test_hs256_token_gives_its_subject() -> None:
    user = uuid.uuid4()
    verified = await _verifier().verify(issue_token(user, secret=SECRET))
    assert verified.id == user and not verified.is_admin
    assert verified.claims["role"] == "authenticated"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_asymmetric_token_verifies_with_the_jwks_key(
    jwks: JwksServer, jwks_url: str, alg: str
) -> None:
    signer = Signer(alg, kid=f"key-{alg}")
    jwks.keys = [signer.jwk()]
    user = uuid.uuid4()
    assert (await _verifier(jwks_url).verify(signer.sign(_claims(user)))).id == user


async def test_keys_are_cached_between_tokens(jwks: JwksServer, jwks_url: str) -> None:
    signer = Signer("ES256", kid="k1")
    jwks.keys = [signer.jwk()]
    verifier = _verifier(jwks_url)
    for _ in range(5):
        await verifier.verify(signer.sign(_claims(uuid.uuid4())))
    assert jwks.hits == 1


async def test_a_rotated_key_is_fetched_once_when_its_kid_is_first_seen(
    jwks: JwksServer, jwks_url: str
) -> None:
    old, new = Signer("ES256", kid="old"), Signer("RS256", kid="new")
    jwks.keys = [old.jwk()]
    verifier = _verifier(jwks_url)
    await verifier.verify(old.sign(_claims(uuid.uuid4())))
    jwks.keys = [old.jwk(), new.jwk()]  # the auth server rotates
    await verifier.verify(new.sign(_claims(uuid.uuid4())))
    await verifier.verify(new.sign(_claims(uuid.uuid4())))
    await verifier.verify(old.sign(_claims(uuid.uuid4())))
    assert jwks.hits == 2


async def test_unknown_kids_refetch_at_most_once_per_cooldown(
    jwks: JwksServer, jwks_url: str
) -> None:
    signer = Signer("ES256", kid="k1")
    jwks.keys = [signer.jwk()]
    verifier = _verifier(jwks_url, cooldown=3600.0)
    await verifier.verify(signer.sign(_claims(uuid.uuid4())))
    for n in range(5):
        with pytest.raises(InvalidCredentials, match="unknown key"):
            await verifier.verify(signer.sign(_claims(uuid.uuid4()), kid=f"made-up-{n}"))
    assert jwks.hits == 1  # the first fetch starts the cooldown; made-up kids cost nothing


async def test_unreachable_jwks_with_nothing_cached_is_unavailable(
    jwks: JwksServer, jwks_url: str
) -> None:
    jwks.failing = True
    signer = Signer("ES256", kid="k1")
    with pytest.raises(KeysUnavailable):
        await _verifier(jwks_url).verify(signer.sign(_claims(uuid.uuid4())))


async def test_cached_keys_survive_a_failed_refresh(jwks: JwksServer, jwks_url: str) -> None:
    signer = Signer("ES256", kid="k1")
    jwks.keys = [signer.jwk()]
    keys = JwksKeys(jwks_url, lifespan_s=0, refresh_cooldown_s=0)  # every use refreshes
    verifier = TokenVerifier(secret=SECRET, jwks=keys)
    await verifier.verify(signer.sign(_claims(uuid.uuid4())))
    jwks.failing = True
    assert (await verifier.verify(signer.sign(_claims(u := uuid.uuid4())))).id == u
    assert jwks.hits == 2


def _hs256_with(key: bytes, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


async def test_algorithm_confusion_is_refused(jwks: JwksServer, jwks_url: str) -> None:
    """An HS256 token whose 'secret' is the published public key must not verify."""
    signer = Signer("RS256", kid="k1")
    jwks.keys = [signer.jwk()]
    verifier = _verifier(jwks_url)
    for key in (signer.public_pem(), json.dumps(signer.jwk()).encode()):
        token = _hs256_with(key, _claims(uuid.uuid4()), {"alg": "HS256", "kid": "k1"})
        with pytest.raises(InvalidCredentials, match="signature"):
            await verifier.verify(token)


async def test_hs256_is_refused_when_no_secret_is_configured(
    jwks: JwksServer, jwks_url: str
) -> None:
    with pytest.raises(InvalidCredentials, match="HS256 tokens are not accepted"):
        await _verifier(jwks_url, secret=None).verify(issue_token(uuid.uuid4(), secret=SECRET))


async def test_asymmetric_tokens_are_refused_without_a_jwks() -> None:
    token = Signer("ES256", kid="k1").sign(_claims(uuid.uuid4()))
    with pytest.raises(InvalidCredentials, match="not accepted here"):
        await _verifier().verify(token)


async def test_a_key_of_another_algorithm_does_not_verify(jwks: JwksServer, jwks_url: str) -> None:
    """The kid names an ES256 key; a token that claims RS256 with it is refused."""
    es, rs = Signer("ES256", kid="shared"), Signer("RS256", kid="shared")
    jwks.keys = [es.jwk()]
    with pytest.raises(InvalidCredentials, match="must be signed with RS256"):
        await _verifier(jwks_url).verify(rs.sign(_claims(uuid.uuid4())))


async def test_symmetric_keys_in_a_jwks_are_ignored(jwks: JwksServer, jwks_url: str) -> None:
    jwks.keys = [{"kty": "oct", "kid": "hmac", "k": _b64(b"x" * 32), "alg": "HS256"}]
    token = jwt.encode(_claims(uuid.uuid4()), b"x" * 32, "HS256", headers={"kid": "hmac"})
    with pytest.raises(InvalidCredentials, match="signature"):
        await _verifier(jwks_url).verify(token)  # checked against JWT_SECRET, not the JWKS


def _alg_none(claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps({'alg': 'none'}).encode())}.{_b64(json.dumps(claims).encode())}."


def _token(user: uuid.UUID, **kwargs: Any) -> str:
    """An HS256 token from ISSUER, unless kwargs say otherwise."""
    kwargs.setdefault("extra_claims", {"iss": ISSUER})
    kwargs.setdefault("secret", SECRET)
    return issue_token(user, **kwargs)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda u: _token(u, now=time.time() - 7200), "expired"),
        (lambda u: _token(u, audience="anon"), "audience"),
        (lambda u: _token(u, extra_claims={"iss": "https://evil"}), "issuer"),
        (lambda u: _token(u, secret=SECRET[::-1]), "signature"),
        (lambda u: _token(u)[:-4] + "AAAA", "signature"),
        (lambda u: _alg_none(_claims(u, iss=ISSUER)), "'none' is not accepted"),
        (lambda u: _alg_none(_claims(u, iss=ISSUER)) + "c2ln", "'none' is not accepted"),
        (
            lambda u: jwt.encode({"sub": str(u), "aud": "authenticated", "iss": ISSUER}, SECRET),
            "'exp'",
        ),
        (lambda u: "not.a.jwt", "malformed"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "secret",
        "tampered",
        "alg-none",
        "alg-none-signed",
        "no-exp",
        "junk",
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(make: Any, reason: str) -> None:
    verifier = _verifier(issuer=ISSUER)
    with pytest.raises(InvalidCredentials) as caught:
        await verifier.verify(make(uuid.uuid4()))
    assert reason in caught.value.reason


async def test_issuer_is_checked_only_when_configured() -> None:
    token = issue_token(uuid.uuid4(), secret=SECRET, extra_claims={"iss": ISSUER})
    await _verifier(issuer=ISSUER).verify(token)
    await _verifier().verify(issue_token(uuid.uuid4(), secret=SECRET))
    with pytest.raises(InvalidCredentials, match="'iss'|issuer"):
        await _verifier(issuer=ISSUER).verify(issue_token(uuid.uuid4(), secret=SECRET))


async def test_tampered_asymmetric_token_is_refused(jwks: JwksServer, jwks_url: str) -> None:
    signer = Signer("ES256", kid="k1")
    jwks.keys = [signer.jwk()]
    head, _, sig = signer.sign(_claims(uuid.uuid4())).split(".")
    forged = _b64(json.dumps(_claims(uuid.uuid4(), app_metadata={"role": "admin"})).encode())
    with pytest.raises(InvalidCredentials, match="signature"):
        await _verifier(jwks_url).verify(f"{head}.{forged}.{sig}")


@pytest.mark.parametrize(
    ("rule", "claims", "is_admin"),
    [
        (AdminRule(), {"app_metadata": {"role": "admin"}}, True),
        (AdminRule(), {"app_metadata": {"role": "player"}}, False),
        (AdminRule(), {"user_metadata": {"role": "admin"}}, False),  # users can edit this one
        (
            AdminRule("app_metadata.roles", "admin"),
            {"app_metadata": {"roles": ["x", "admin"]}},
            True,
        ),
        (AdminRule("user_role", "admin"), {"user_role": "admin"}, True),
        (AdminRule("", "admin"), {"app_metadata": {"role": "admin"}}, False),
    ],
)
async def test_admins_are_recognised_by_the_configured_claim(
    rule: AdminRule, claims: dict[str, Any], is_admin: bool
) -> None:
    token = issue_token(uuid.uuid4(), secret=SECRET, extra_claims=claims)
    assert (await _verifier(admin=rule).verify(token)).is_admin is is_admin


async def test_admin_rule_mints_the_claims_it_recognises() -> None:
    rule = AdminRule("app_metadata.role", "admin")
    assert rule.claims() == {"app_metadata": {"role": "admin"}}
    assert rule.matches(rule.claims())


def _guarded_app() -> FastAPI:
    app = FastAPI()
    app.state.verifier = _verifier()
    install_problem_handlers(app)

    @app.get("/admin")
    async def admin_only(user: AdminUser) -> dict[str, str]:
        return {"id": str(user.id)}

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, bool]:
        return {"is_admin": user.is_admin}

    return app


async def test_admin_dependency_is_a_403_problem_for_players() -> None:
    transport = httpx.ASGITransport(app=_guarded_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        player = {"Authorization": f"Bearer {issue_token(uuid.uuid4(), secret=SECRET)}"}
        admin_token = issue_token(uuid.uuid4(), secret=SECRET, extra_claims=AdminRule().claims())
        admin = {"Authorization": f"Bearer {admin_token}"}
        refused = await http.get("/admin", headers=player)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 403
        assert (await http.get("/admin", headers=admin)).status_code == 200
        assert (await http.get("/admin")).status_code == 401
        assert (await http.get("/me", headers=admin)).json() == {"is_admin": True}
