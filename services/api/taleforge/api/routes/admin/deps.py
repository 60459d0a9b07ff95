"""Dependencies of the admin routes: the read-only admin connection, NATS for settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taleforge.api.adapters import read_model
from taleforge.api.adapters.admin_nats import AdminNats
from taleforge.api.deps import AdminUser, Bus, SettingsDep, get_engine
from taleforge.api.session_models import Responses

FORBIDDEN: Responses = {403: {"description": "Not an administrator's token"}}


async def get_admin_db(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
    settings: SettingsDep,
    admin: AdminUser,
) -> AsyncIterator[AsyncConnection]:
    """A connection whose transaction reads every player's rows, and may change none."""
    async with engine.connect() as conn:
        await read_model.act_as(conn, admin.id, role=settings.admin_db_role)
        yield conn


def get_admin_nats(bus: Bus, settings: SettingsDep) -> AdminNats:
    return AdminNats(
        bus,
        narrator_bucket=settings.narrator_settings_bucket,
        templates_bucket=settings.illustrator_templates_bucket,
        timeout_s=settings.publish_timeout_s,
    )


AdminDb = Annotated[AsyncConnection, Depends(get_admin_db)]
AdminNatsDep = Annotated[AdminNats, Depends(get_admin_nats)]
