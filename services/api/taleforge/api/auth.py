"""Bearer JWTs (Supabase Auth access tokens): who the caller is, and whether they are an admin.

Two kinds of signature are accepted, each with its own key source and nothing else:
- HS256 with the project's shared secret (`JWT_SECRET`; empty turns HS256 off);
- ES256 / RS256 with a public key from the project's JWKS (`API_JWKS_URL`), found by `kid`.

The algorithm a token names only picks which of those two paths it takes; the key always comes
from that path's own source and is bound to its algorithm. So `alg: none` is refused, and an
HS256 token "signed" with a public key (algorithm confusion) is checked against the secret and
fails. `exp` and `sub` are required, `aud` must match (`authenticated` by default) and `iss`
too when configured. The user id is `sub`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import jwt

from taleforge.api.settings import Settings

log = logging.getLogger(__name__)

HMAC_ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = ("ES256", "RS256")
ACCEPTED_ALGORITHMS = (HMAC_ALGORITHM, *PUBLIC_KEY_ALGORITHMS)
# Back-compatible name: what `issue_token` signs with.
ALGORITHM = HMAC_ALGORITHM

_LEEWAY_S = 5


class InvalidCredentials(Exception):
    """The token is missing or unacceptable; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and no key is cached: a dependency is down (503)."""


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    is_admin: bool = False
    # The verified claims, for routes that need more than the id (e.g. the email).
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AdminRule:
    """A user is an admin when the claim at `path` (dotted) equals `value`, or is a list
    containing it: e.g. `app_metadata.role` == `admin`. An empty path makes nobody admin."""

    path: str = "app_metadata.role"
    value: str = "admin"

    def matches(self, claims: Mapping[str, Any]) -> bool:
        found = claim_at(claims, self.path)
        if isinstance(found, list | tuple):
            return self.value in [str(item) for item in found]
        return found is not None and str(found) == self.value

    def claims(self) -> dict[str, Any]:
        """Claims that make a token an admin's under this rule (for dev tokens)."""
        if not self.path:
            return {}
        nested: Any = self.value
        for part in reversed(self.path.split(".")):
            nested = {part: nested}
        result: dict[str, Any] = nested
        return result


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    if not path:
        return None
    current: Any = claims
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


class JwksKeys:
    """The public signing keys of a JWKS URL, cached, refreshed on expiry and on rotation.

    A `kid` that is not cached triggers one refetch, at most once per `refresh_cooldown_s`
    (so tokens with made-up `kid`s cannot make us hammer the auth server). If a refresh fails
    the keys already cached stay in use; only with none at all is it `KeysUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        lifespan_s: float = 300.0,
        refresh_cooldown_s: float = 30.0,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.lifespan_s = lifespan_s
        self.refresh_cooldown_s = refresh_cooldown_s
        self._timeout_s = timeout_s
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the URL was fetched (tests, metrics)

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        if self._fetched_at is None or now - self._fetched_at > self.lifespan_s:
            await self._refresh(force=False)
        key = self._lookup(kid)
        if key is None and self._may_refetch():
            await self._refresh(force=True)
            key = self._lookup(kid)
        if key is None:
            if not self._keys and self._fetched_at is None:
                raise KeysUnavailable(f"the signing keys at {self.url} could not be fetched")
            raise InvalidCredentials("the token is signed with an unknown key (kid)")
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # Without a kid only an unambiguous set will do.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_refetch(self) -> bool:
        last = self._attempted_at
        return last is None or time.monotonic() - last >= self.refresh_cooldown_s

    async def _refresh(self, *, force: bool) -> None:
        started = time.monotonic()
        async with self._lock:
            # Someone else refreshed while we waited for the lock: use theirs.
            if self._attempted_at is not None and self._attempted_at >= started:
                return
            if not force and self._fetched_at is not None:
                if time.monotonic() - self._fetched_at <= self.lifespan_s:
                    return
            self._attempted_at = time.monotonic()
            try:
                document = await self._fetch()
                keys = _parse_jwks(document)
            except Exception as exc:
                log.warning("could not fetch the JWKS at %s: %r", self.url, exc)
                return
            self._keys = keys
            self._fetched_at = time.monotonic()
            log.info("fetched %d signing key(s) from %s", len(keys), self.url)

    async def _fetch(self) -> Any:
        self.fetches += 1
        if self._client is not None:
            response = await self._client.get(self.url, timeout=self._timeout_s)
        else:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                response = await client.get(self.url)
        response.raise_for_status()
        return response.json()


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable public signing keys, by kid. Symmetric (`oct`) keys are never taken from a
    JWKS: that would let a published document decide an HMAC secret."""
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(document.get("keys", []) if isinstance(document, dict) else []):
        if not isinstance(entry, dict) or entry.get("kty") not in ("EC", "RSA"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("skipping an unusable JWKS key %s: %s", entry.get("kid"), exc)
            continue
        if key.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
            continue
        keys[str(entry.get("kid", f"#{index}"))] = key
    return keys


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Everything needed to check a token; build one per app (it holds the JWKS cache)."""

    secret: str | None
    audience: str | None = "authenticated"
    issuer: str | None = None
    jwks: JwksKeys | None = None
    admin: AdminRule = field(default_factory=AdminRule)

    async def verify(self, token: str) -> User:
        """Return the token's user, or raise `InvalidCredentials` saying why not."""
        alg, kid = _header(token)
        key: str | jwt.PyJWK
        if alg == HMAC_ALGORITHM:
            if not self.secret:
                raise InvalidCredentials("HS256 tokens are not accepted here; use ES256 or RS256")
            key = self.secret
        elif alg in PUBLIC_KEY_ALGORITHMS:
            if self.jwks is None:
                raise InvalidCredentials(f"{alg} tokens are not accepted here; use HS256")
            key = await self.jwks.key_for(kid)
        else:
            raise InvalidCredentials(
                f"the token algorithm {alg!r} is not accepted; use one of "
                + ", ".join(ACCEPTED_ALGORITHMS)
            )
        claims = _decode(token, key, alg, audience=self.audience, issuer=self.issuer)
        return _user(claims, self.admin)


def _header(token: str) -> tuple[str, str | None]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidCredentials("the token is malformed or invalid") from exc
    alg, kid = header.get("alg"), header.get("kid")
    return str(alg), (str(kid) if kid is not None else None)


def _decode(
    token: str, key: str | jwt.PyJWK, alg: str, *, audience: str | None, issuer: str | None
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience or None,
            issuer=issuer or None,
            options={"require": ["exp", "sub"], "verify_aud": bool(audience)},
            leeway=_LEEWAY_S,
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidCredentials("the token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidCredentials("the token is not meant for this service (audience)") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidCredentials("the token was not issued by the expected issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidCredentials(f"the token lacks the required '{exc.claim}' claim") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise InvalidCredentials(f"the token must be signed with {alg}") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidCredentials("the token signature does not verify") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidCredentials("the token is malformed or invalid") from exc
    return claims


def _user(claims: dict[str, Any], admin: AdminRule) -> User:
    try:
        user_id = UUID(str(claims["sub"]))
    except ValueError as exc:
        raise InvalidCredentials("the token subject is not a user id") from exc
    return User(id=user_id, is_admin=admin.matches(claims), claims=claims)


def verify_token(
    token: str,
    *,
    secret: str,
    audience: str | None,
    issuer: str | None = None,
    admin: AdminRule | None = None,
) -> User:
    """HS256 only, synchronously: the shared-secret half of `TokenVerifier.verify`."""
    alg, _ = _header(token)
    if alg != HMAC_ALGORITHM:
        raise InvalidCredentials(f"the token algorithm {alg!r} is not accepted; use HS256")
    claims = _decode(token, secret, alg, audience=audience, issuer=issuer)
    return _user(claims, admin or AdminRule())


def issue_token(
    user_id: UUID | str,
    *,
    secret: str,
    audience: str = "authenticated",
    ttl_s: int = 3600,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A token this service accepts (`taleforge token`, tests; Supabase issues them in prod).

    The claims are Supabase's (`sub`, `aud`, `role`, `iat`, `exp`), so both verify alike;
    `extra_claims` adds more (e.g. `AdminRule().claims()` for an admin's token).
    """
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "aud": audience,
        "role": "authenticated",
        "iat": issued,
        "exp": issued + ttl_s,
        **(extra_claims or {}),
    }
    return jwt.encode(claims, secret, algorithm=HMAC_ALGORITHM)


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier the API's `Settings` describe."""
    jwks = (
        JwksKeys(
            settings.jwks_url,
            lifespan_s=settings.jwks_cache_s,
            refresh_cooldown_s=settings.jwks_refresh_cooldown_s,
        )
        if settings.jwks_url
        else None
    )
    return TokenVerifier(
        secret=settings.jwt_secret.get_secret_value() or None,
        audience=settings.jwt_audience or None,
        issuer=settings.jwt_issuer or None,
        jwks=jwks,
        admin=AdminRule(path=settings.admin_claim, value=settings.admin_value),
    )
