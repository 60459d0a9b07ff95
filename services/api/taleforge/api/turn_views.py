"""Read-model rows as the turn and image bodies the API answers with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from taleforge.api.models import ImagePublic, TurnPublic
from taleforge.contracts import TokenUsage


def image_public(row: Row[Any]) -> ImagePublic:
    return ImagePublic(
        image_id=row.id,
        kind=row.kind,
        status=row.status,
        url=f"/api/images/{row.id}" if row.status == "completed" else None,
        error=row.error if row.status == "failed" else None,
    )


def usage_of(row: Row[Any]) -> TokenUsage | None:
    if row.total_tokens is None and row.input_tokens is None:
        return None
    return TokenUsage(
        input_tokens=row.input_tokens or 0,
        cached_tokens=row.cached_tokens or 0,
        output_tokens=row.output_tokens or 0,
        reasoning_tokens=row.reasoning_tokens or 0,
        total_tokens=row.total_tokens or 0,
    )


def turn_public(row: Row[Any], images: Iterable[Row[Any]] = ()) -> TurnPublic:
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
        usage=usage_of(row),
        images=[image_public(image) for image in images],
    )
