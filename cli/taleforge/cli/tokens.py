"""Dev access tokens: minted by the API's own `issue_token`, with the secret it verifies.

Production tokens come from Supabase Auth and carry the same claims.
"""

from __future__ import annotations

import uuid

from taleforge.api.auth import AdminRule, issue_token
from taleforge.api.settings import Settings

# A fixed player id for `make dev`, so a restarted stack still finds your sessions.
DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def mint_token(
    user_id: uuid.UUID | str = DEV_USER_ID, *, ttl_s: int = 24 * 3600, admin: bool = False
) -> str:
    """A token that an API started from this environment accepts.

    Signed with its secret (`JWT_SECRET`, else the API's development default, which is what
    the dev stack hands its API too) for its audience (`API_JWT_AUDIENCE`) and issuer
    (`API_JWT_ISSUER`, if set). With `admin`, it carries the claim the API takes for an
    administrator's (`API_ADMIN_CLAIM` = `API_ADMIN_VALUE`).
    """
    api = Settings()
    extra: dict[str, object] = {}
    if api.jwt_issuer:
        extra["iss"] = api.jwt_issuer
    if admin:
        extra.update(AdminRule(path=api.admin_claim, value=api.admin_value).claims())
    return issue_token(
        user_id,
        secret=api.jwt_secret.get_secret_value(),
        audience=api.jwt_audience or "authenticated",
        ttl_s=ttl_s,
        extra_claims=extra,
    )
