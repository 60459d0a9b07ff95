"""Bearer JWTs (Supabase style, HS256): who the caller is.

The user id is the token's `sub`. Only HS256 is accepted, so `alg: none` and algorithm
confusion tricks fail; `exp` and `sub` are required.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import jwt

ALGORITHM = "HS256"


class InvalidCredentials(Exception):
    """The token is missing or unacceptable; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class User:
    id: UUID


def verify_token(token: str, *, secret: str, audience: str | None) -> User:
    """Return the token's user, or raise `InvalidCredentials` saying why not."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience or None,
            options={"require": ["exp", "sub"], "verify_aud": bool(audience)},
            leeway=5,
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidCredentials("the token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidCredentials("the token is not meant for this service (audience)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidCredentials(f"the token lacks the required '{exc.claim}' claim") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise InvalidCredentials(f"the token must be signed with {ALGORITHM}") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidCredentials("the token signature does not verify") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidCredentials("the token is malformed or invalid") from exc
    try:
        return User(id=UUID(str(claims["sub"])))
    except ValueError as exc:
        raise InvalidCredentials("the token subject is not a user id") from exc


def issue_token(
    user_id: UUID | str,
    *,
    secret: str,
    audience: str = "authenticated",
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A token this service accepts (`taleforge token`, tests; Supabase issues them in prod).

    The claims are Supabase's (`sub`, `aud`, `role`, `iat`, `exp`), so both verify alike.
    """
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": str(user_id),
        "aud": audience,
        "role": "authenticated",
        "iat": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
