"""The sandbox's own endpoints: models list, recorded requests and fault settings."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from taleforge.sandboxes.openai.config import FaultConfig
from taleforge.sandboxes.openai.state import SandboxState

router = APIRouter()


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    created = int(time.time())
    models = [
        {"id": name, "object": "model", "created": created, "owned_by": "taleforge-sandbox"}
        for name in _state(request).config.models
    ]
    return {"object": "list", "data": models}


@router.get("/_sandbox/requests")
async def read_requests(request: Request) -> list[dict[str, Any]]:
    return _state(request).requests


@router.delete("/_sandbox/requests", status_code=204)
async def delete_requests(request: Request) -> None:
    _state(request).requests.clear()


@router.get("/_sandbox/stats")
async def read_stats(request: Request) -> dict[str, int]:
    """Requests recorded, and model calls and streams counted since the faults were last set."""
    return _state(request).stats()


@router.get("/_sandbox/faults")
async def read_faults(request: Request) -> FaultConfig:
    return _state(request).faults


@router.put("/_sandbox/faults")
async def replace_faults(faults: FaultConfig, request: Request) -> FaultConfig:
    _state(request).replace_faults(faults)
    return faults
