"""GET /api/images/{id}: bytes from the NATS object store, cacheable, owner only."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from taleforge.contracts import IMAGE_BUCKET

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 50


async def test_a_completed_image_is_served_with_etag_and_304(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    store = await api.js.create_object_store(IMAGE_BUCKET)
    await store.put("scene/one.png", PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    session_id = await api.rows.session(player)
    turn_id = await api.rows.turn(session_id, player, status="completed")
    image_id = await api.rows.image(
        turn_id,
        player,
        status="completed",
        bucket=IMAGE_BUCKET,
        object_name="scene/one.png",
        content_type="image/png",
        size_bytes=len(PNG),
        sha256=digest,
    )
    url = f"/api/images/{image_id}"

    served = await api.http.get(url, headers=api.auth(player))

    assert served.status_code == 200
    assert served.content == PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["etag"] == f'"{digest}"'
    assert served.headers["cache-control"].startswith("private, max-age=")

    cached = await api.http.get(url, headers={**api.auth(player), "If-None-Match": f'"{digest}"'})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == f'"{digest}"'

    stranger = await api.http.get(url, headers=api.auth(uuid.uuid4()))
    assert stranger.status_code == 404 and stranger.json()["status"] == 404


async def test_a_pending_image_is_404(api) -> None:  # type: ignore[no-untyped-def]
    player = uuid.uuid4()
    session_id = await api.rows.session(player)
    turn_id = await api.rows.turn(session_id, player)
    image_id = await api.rows.image(turn_id, player)

    response = await api.http.get(f"/api/images/{image_id}", headers=api.auth(player))

    assert response.status_code == 404 and "pending" in response.json()["detail"]
