"""Typed dependencies the routes declare: the caller, a read-model connection, the bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taleforge.api.adapters import read_model
from taleforge.api.adapters.bus import EventBus
from taleforge.api.auth import InvalidCredentials, TokenVerifier, User
from taleforge.api.limits.rate import RateLimiter
from taleforge.api.settings import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description="A Supabase Auth access token (HS256, or ES256/RS256 via JWKS); `sub` = user id.",
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.bus
    return bus


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
Bus = Annotated[EventBus, Depends(get_bus)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=reason,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def get_verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.verifier
    return verifier


async def current_user(
    request: Request,
    verifier: Annotated[TokenVerifier, Depends(get_verifier)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The caller, from their token; each call counts against their request rate (429)."""
    if credentials is None:
        raise _unauthorized("an 'Authorization: Bearer <token>' header is required")
    try:
        user = await verifier.verify(credentials.credentials)
    except InvalidCredentials as exc:
        raise _unauthorized(exc.reason) from exc
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        verdict = await limiter.hit(user.id)
        if not verdict.allowed:
            raise HTTPException(
                429,
                f"more than {verdict.limit} requests in a minute; slow down",
                headers={"Retry-After": str(verdict.retry_after_s)},
            )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(403, "this needs an administrator's token")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def get_db(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
    settings: SettingsDep,
    user: CurrentUser,
) -> AsyncIterator[AsyncConnection]:
    """A read-model connection whose transaction runs as the caller (row-level security)."""
    async with engine.connect() as conn:
        await read_model.act_as(conn, user.id, role=settings.db_role)
        yield conn


DbSession = Annotated[AsyncConnection, Depends(get_db)]
# Returned to the pool when the route function returns, before the response is sent: for
# routes whose response lasts (an SSE stream, a wait for the turn's result).
DbForCall = Annotated[AsyncConnection, Depends(get_db, scope="function")]
