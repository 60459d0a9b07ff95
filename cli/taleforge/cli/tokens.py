"""Dev access tokens: Supabase-shaped JWTs signed with the dev secret.

Production tokens come from Supabase Auth; these carry the same claims (`sub`, `aud`,
`role`, `exp`), so the API verifies both the same way.
"""

from __future__ import annotations

import os
import time
import uuid

import jwt

DEV_JWT_SECRET = "taleforge-dev-secret-not-for-production-0123456789"
# A fixed player id for `make dev`, so a restarted stack still finds your sessions.
DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def mint_token(
    user_id: uuid.UUID | str = DEV_USER_ID,
    *,
    secret: str | None = None,
    ttl_s: int = 24 * 3600,
    audience: str = "authenticated",
    admin: bool = False,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": str(user_id),
        "aud": audience,
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_s,
        "app_metadata": {"role": "admin"} if admin else {},
    }
    key = secret or os.environ.get("JWT_SECRET") or DEV_JWT_SECRET
    return jwt.encode(claims, key, algorithm="HS256")
