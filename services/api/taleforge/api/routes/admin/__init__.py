"""Admin endpoints (`/api/admin/…`): an admin's token only (403 otherwise).

Reads run as the read-only role `taleforge_admin_read`; every change is an admin event on
`story.events.admin.<type>` that persistence projects, so a replay rebuilds it too.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from taleforge.api.deps import admin_user
from taleforge.api.routes.admin import dead_letters, scenarios, service_settings, users

# On the router itself, so no admin route can be added without the check.
router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(admin_user)])
for part in (scenarios, service_settings, users, dead_letters):
    router.include_router(part.router)
