"""A turn's state: pending, narrating, completed (with narration and usage) or failed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException
from sqlalchemy import Row

from taleforge.api.adapters import read_model
from taleforge.api.deps import CurrentUser, DbSession
from taleforge.api.models import ImagePublic, TurnPublic
from taleforge.contracts import TokenUsage

router = APIRouter(prefix="/api/turns", tags=["turns"])


def _image(row: Row[Any]) -> ImagePublic:
    return ImagePublic(
        image_id=row.id,
        kind=row.kind,
        status=row.status,
        url=f"/api/images/{row.id}" if row.status == "completed" else None,
        error=row.error if row.status == "failed" else None,
    )


def _usage(row: Row[Any]) -> TokenUsage | None:
    if row.total_tokens is None and row.input_tokens is None:
        return None
    return TokenUsage(
        input_tokens=row.input_tokens or 0,
        cached_tokens=row.cached_tokens or 0,
        output_tokens=row.output_tokens or 0,
        reasoning_tokens=row.reasoning_tokens or 0,
        total_tokens=row.total_tokens or 0,
    )


@router.get("/{turn_id}", response_model=TurnPublic, responses={404: {}})
async def read_turn(turn_id: UUID, user: CurrentUser, db: DbSession) -> TurnPublic:
    row = await read_model.get_turn(db, turn_id, user.id)
    if row is None:
        # Also for a turn accepted a moment ago that persistence has not recorded yet: every
        # replica answers alike, and the client polls again.
        raise HTTPException(404, f"no turn {turn_id}")
    images = await read_model.list_turn_images(db, turn_id, user.id)
    return TurnPublic(
        turn_id=row.id,
        session_id=row.session_id,
        seq=row.seq,
        input_type=row.input_type,
        text=row.input_text or "",
        status=row.status,
        narration=row.narration,
        error=row.error if row.status == "failed" else None,
        model=row.model,
        usage=_usage(row),
        images=[_image(image) for image in images],
    )
