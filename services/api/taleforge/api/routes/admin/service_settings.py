"""The services' live settings: narrator parameters and illustrator workflow templates.

A change is written to the service's KV bucket first, which the service watches, so it is in
effect for the next turn or image; then a `settings.changed` event records it (persistence
keeps the history). The bucket is what the service reads, so it goes first: were the event
to fail after it (a 503), the change is live but unrecorded, and repeating the same request
records it, whereas the other order could record a change that never took effect.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError

from taleforge.api.adapters import admin_reads
from taleforge.api.admin_models import (
    IllustratorSettingsPublic,
    NarratorSettingsChange,
    NarratorSettingsPublic,
    SettingsChangePublic,
    TemplatePublic,
    TemplateWrite,
)
from taleforge.api.deps import AdminUser, Bus
from taleforge.api.routes.admin.deps import FORBIDDEN, AdminDb, AdminNatsDep
from taleforge.contracts import ImageKind, SettingsChanged

router = APIRouter(prefix="/settings")

Kind = Annotated[ImageKind, Path(description="The image kind the template renders.")]


@router.get("/narrator", response_model=NarratorSettingsPublic, responses=FORBIDDEN)
async def read_narrator_settings(nats: AdminNatsDep) -> NarratorSettingsPublic:
    overrides, revision = await nats.narrator_settings()
    return NarratorSettingsPublic(overrides=overrides, revision=revision)


@router.patch(
    "/narrator",
    response_model=NarratorSettingsPublic,
    responses={**FORBIDDEN, 422: {"description": "A value the narrator would refuse"}},
)
async def change_narrator_settings(
    body: NarratorSettingsChange, admin: AdminUser, bus: Bus, nats: AdminNatsDep
) -> NarratorSettingsPublic:
    """Change model, temperature, token limits or image policy for the next turns; null
    puts a field back to the narrator's configured default."""
    changes = body.changes()
    if not changes:
        raise RequestValidationError(
            [
                {
                    "loc": ("body",),
                    "msg": "name at least one setting to change",
                    "type": "value_error",
                }
            ]
        )
    revision = await nats.change_narrator_settings(changes)
    await bus.publish(
        SettingsChanged(user_id=admin.id, service="narrator", changes=changes, revision=revision)
    )
    overrides, revision = await nats.narrator_settings()
    return NarratorSettingsPublic(overrides=overrides, revision=revision)


async def _illustrator(nats: AdminNatsDep) -> IllustratorSettingsPublic:
    registered = await nats.templates()
    return IllustratorSettingsPublic(
        templates=[
            TemplatePublic(kind=kind.value, version=registered[kind.value], source="registered")
            if kind.value in registered
            else TemplatePublic(kind=kind.value, version=0, source="shipped")
            for kind in ImageKind
        ]
    )


async def _change_template(
    kind: ImageKind, workflow: str | None, admin: AdminUser, bus: Bus, nats: AdminNatsDep
) -> IllustratorSettingsPublic:
    """Store `kind`'s template (None: back to the shipped one), record it, answer the set."""
    revision = await nats.change_template(kind.value, workflow)
    await bus.publish(
        SettingsChanged(
            user_id=admin.id,
            service="illustrator",
            changes={kind.value: workflow},
            revision=revision,
        )
    )
    return await _illustrator(nats)


@router.get("/illustrator", response_model=IllustratorSettingsPublic, responses=FORBIDDEN)
async def read_illustrator_settings(nats: AdminNatsDep) -> IllustratorSettingsPublic:
    """Which workflow template each image kind renders with."""
    return await _illustrator(nats)


@router.put(
    "/illustrator/templates/{kind}",
    response_model=IllustratorSettingsPublic,
    responses={**FORBIDDEN, 422: {"description": "Not an API-format workflow"}},
)
async def register_template(
    kind: Kind, body: TemplateWrite, admin: AdminUser, bus: Bus, nats: AdminNatsDep
) -> IllustratorSettingsPublic:
    """A new version of `kind`'s template, used from the next image on. Checked here for
    shape only; the illustrator checks its placeholders when it loads it (an image it cannot
    fill fails with the reason), as `python -m taleforge.illustrator templates register`
    does before storing."""
    workflow = json.dumps(body.workflow, indent=1)
    return await _change_template(kind, workflow, admin, bus, nats)


@router.delete(
    "/illustrator/templates/{kind}",
    response_model=IllustratorSettingsPublic,
    responses={**FORBIDDEN, 404: {"description": "The kind uses its shipped template"}},
)
async def restore_shipped_template(
    kind: Kind, admin: AdminUser, bus: Bus, nats: AdminNatsDep
) -> IllustratorSettingsPublic:
    """Go back to the template shipped with the illustrator (old versions stay readable)."""
    if kind.value not in await nats.templates():
        raise HTTPException(404, f"the {kind.value} template is already the shipped one")
    return await _change_template(kind, None, admin, bus, nats)


@router.get("/history", response_model=list[SettingsChangePublic], responses=FORBIDDEN)
async def settings_history(
    db: AdminDb,
    service: Annotated[str | None, Query(pattern="^(narrator|illustrator)$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[SettingsChangePublic]:
    """Who changed which setting when, newest first."""
    rows = await admin_reads.settings_history(db, service=service, limit=limit)
    return [SettingsChangePublic.model_validate(row, from_attributes=True) for row in rows]
