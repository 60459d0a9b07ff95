"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taleforge.api.adapters import read_model
from taleforge.api.deps import Bus
from taleforge.api.models import HealthPublic, ReadinessPublic
from taleforge.api.problems import problem

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=HealthPublic)
async def read_health() -> HealthPublic:
    """The process is alive (says nothing about NATS or Postgres)."""
    return HealthPublic()


async def _check_nats(bus: Bus) -> str:
    if not bus.connected:
        return "NATS is not connected"
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            exists = await bus.stream_exists()
    except Exception as exc:
        return f"NATS does not answer: {type(exc).__name__}"
    return "ok" if exists else "stream STORY does not exist yet"


async def _check_postgres(request: Request) -> str:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S), request.app.state.engine.connect() as conn:
            await read_model.ping(conn)
    except Exception as exc:
        return f"Postgres does not answer: {type(exc).__name__}"
    return "ok"


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"description": "NATS or Postgres is not usable"}},
)
async def read_readiness(request: Request, bus: Bus) -> ReadinessPublic | JSONResponse:
    """Ready when NATS is connected (with the STORY stream) and Postgres answers SELECT 1."""
    nats_state, postgres_state = await asyncio.gather(_check_nats(bus), _check_postgres(request))
    checks = {"nats": nats_state, "postgres": postgres_state}
    if all(state == "ok" for state in checks.values()):
        return ReadinessPublic(status="ready", checks=checks)
    failing = "; ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok")
    return problem(503, failing, slug="not-ready", checks=checks)
