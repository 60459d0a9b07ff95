"""Image bytes, straight from the NATS object store, for their owner only."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Response

from taleforge.api.adapters import read_model
from taleforge.api.adapters.bus import ObjectMissing
from taleforge.api.deps import Bus, CurrentUser, DbSession, SettingsDep

router = APIRouter(prefix="/api/images", tags=["images"])


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


@router.get(
    "/{image_id}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The image bytes."},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        404: {"description": "No such image of yours, or not rendered (yet)."},
    },
)
async def read_image(
    image_id: UUID,
    user: CurrentUser,
    db: DbSession,
    bus: Bus,
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    row = await read_model.get_image(db, image_id, user.id)
    if row is None:
        raise HTTPException(404, f"no image {image_id}")
    if row.status != "completed":
        reason = f": {row.error}" if row.status == "failed" and row.error else ""
        raise HTTPException(404, f"image {image_id} is {row.status}{reason}")
    # Image ids are never reused and the bytes never change, so the digest is a strong ETag.
    headers = {"Cache-Control": f"private, max-age={settings.image_max_age_s}"}
    if row.sha256:
        headers["ETag"] = f'"{row.sha256}"'
        if if_none_match and _matches(if_none_match, headers["ETag"]):
            return Response(status_code=304, headers=headers)
    try:
        data = await bus.read_object(row.bucket, row.object_name)
    except ObjectMissing as exc:
        raise HTTPException(404, f"the bytes of image {image_id} are missing") from exc
    return Response(
        data, media_type=row.content_type or "application/octet-stream", headers=headers
    )
