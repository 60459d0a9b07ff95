"""Scenarios: list, read, create, replace, delete (`scenario.upserted` / `scenario.deleted`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import Row

from taleforge.api.adapters import admin_reads
from taleforge.api.admin_models import AdminScenario, ScenarioCreate, ScenarioWrite
from taleforge.api.deps import AdminUser, Bus, SettingsDep
from taleforge.api.routes.admin.deps import FORBIDDEN, AdminDb
from taleforge.api.routes.sessions import until_projected
from taleforge.api.session_models import Responses
from taleforge.contracts import ScenarioDeleted, ScenarioUpserted
from taleforge.contracts.events import SLUG_PATTERN

router = APIRouter(prefix="/scenarios")

Slug = Annotated[str, Path(pattern=SLUG_PATTERN)]
NOT_FOUND: Responses = {404: {"description": "No such stored scenario"}}
PENDING: Responses = {
    202: {"model": AdminScenario, "description": "Accepted; not yet visible to reads."}
}


def scenario_public(row: Row[Any]) -> AdminScenario:
    return AdminScenario(
        scenario_id=row.slug,
        title=row.title,
        summary=row.summary or "",
        opening=row.opening or "",
        scenario=row.snapshot or {},
        published=row.published,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _existing(db: AdminDb, slug: str) -> Row[Any]:
    row = await admin_reads.get_scenario(db, slug)
    if row is None:
        raise HTTPException(404, f"no scenario {slug!r}")
    return row


async def _upsert(
    admin: AdminUser,
    bus: Bus,
    db: AdminDb,
    settings: SettingsDep,
    response: Response,
    slug: str,
    body: ScenarioWrite,
) -> AdminScenario:
    event = ScenarioUpserted(
        user_id=admin.id,
        scenario_id=slug,
        title=body.title,
        summary=body.summary,
        opening=body.opening,
        scenario=body.scenario,
        published=body.published,
    )
    await bus.publish(event)

    async def projected() -> Row[Any] | None:
        row = await admin_reads.get_scenario(db, slug)
        return row if row is not None and row.updated_at == event.occurred_at else None

    row = await until_projected(settings, projected)
    if row is not None:
        return scenario_public(row)
    response.status_code = 202
    return AdminScenario(
        **body.model_dump(),
        scenario_id=slug,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
    )


@router.get("", response_model=list[AdminScenario], responses=FORBIDDEN)
async def list_scenarios(db: AdminDb) -> list[AdminScenario]:
    """Every stored scenario, published or not (the bundled default is not stored)."""
    return [scenario_public(row) for row in await admin_reads.list_scenarios(db)]


@router.get("/{scenario_id}", response_model=AdminScenario, responses={**FORBIDDEN, **NOT_FOUND})
async def read_scenario(scenario_id: Slug, db: AdminDb) -> AdminScenario:
    return scenario_public(await _existing(db, scenario_id))


@router.post(
    "",
    status_code=201,
    response_model=AdminScenario,
    responses={**FORBIDDEN, **PENDING, 409: {"description": "The scenario id is taken"}},
)
async def create_scenario(
    body: ScenarioCreate,
    admin: AdminUser,
    bus: Bus,
    db: AdminDb,
    settings: SettingsDep,
    response: Response,
) -> AdminScenario:
    if await admin_reads.get_scenario(db, body.scenario_id) is not None:
        raise HTTPException(409, f"scenario {body.scenario_id!r} exists; PUT replaces it")
    write = ScenarioWrite(**body.model_dump(exclude={"scenario_id"}))
    return await _upsert(admin, bus, db, settings, response, body.scenario_id, write)


@router.put(
    "/{scenario_id}",
    response_model=AdminScenario,
    responses={**FORBIDDEN, **NOT_FOUND, **PENDING},
)
async def replace_scenario(
    scenario_id: Slug,
    body: ScenarioWrite,
    admin: AdminUser,
    bus: Bus,
    db: AdminDb,
    settings: SettingsDep,
    response: Response,
) -> AdminScenario:
    """Replace a stored scenario. Sessions already started keep the scenario they began with."""
    await _existing(db, scenario_id)
    return await _upsert(admin, bus, db, settings, response, scenario_id, body)


@router.delete(
    "/{scenario_id}",
    status_code=204,
    response_class=Response,
    responses={**FORBIDDEN, **NOT_FOUND, 202: {"description": "Deleting; still readable."}},
)
async def delete_scenario(
    scenario_id: Slug, admin: AdminUser, bus: Bus, db: AdminDb, settings: SettingsDep
) -> Response:
    await _existing(db, scenario_id)
    await bus.publish(ScenarioDeleted(user_id=admin.id, scenario_id=scenario_id))

    async def gone() -> bool:
        return await admin_reads.get_scenario(db, scenario_id) is None

    done = await until_projected(settings, gone)
    return Response(status_code=204 if done else 202)
