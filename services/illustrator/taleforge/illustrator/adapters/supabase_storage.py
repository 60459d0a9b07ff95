"""Image bytes in Supabase Storage, through its REST API (service key, server side only).

`POST /storage/v1/object/{bucket}/{path}` with `x-upsert: true` (a redelivered request
writes the same bytes again) and user metadata in `x-metadata` (base64 JSON, as
supabase-js sends it); `GET` the same path reads it back. The bucket is private: the API
serves images to their owner.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import httpx

from taleforge.illustrator.adapters.object_store import StoredImage

log = logging.getLogger(__name__)


class StorageError(Exception):
    pass


class SupabaseImageStore:
    def __init__(
        self, url: str, service_key: str, bucket: str, *, http: httpx.AsyncClient | None = None
    ) -> None:
        if not url or not service_key:
            raise ValueError("Supabase storage needs SUPABASE_URL and SUPABASE_SERVICE_KEY")
        self.bucket = bucket
        headers = {"Authorization": f"Bearer {service_key}", "apikey": service_key}
        self._http = http or httpx.AsyncClient(
            base_url=f"{url.rstrip('/')}/storage/v1", headers=headers, timeout=30.0
        )

    @classmethod
    async def open(cls, url: str, service_key: str, bucket: str) -> SupabaseImageStore:
        store = cls(url, service_key, bucket)
        await store.ensure_bucket()
        return store

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ensure_bucket(self) -> None:
        response = await self._http.post(
            "/bucket", json={"id": self.bucket, "name": self.bucket, "public": False}
        )
        # 409 (or 400 "Duplicate" on older servers) when it exists already: fine.
        if response.status_code not in (200, 201, 400, 409):
            raise StorageError(f"Supabase bucket {self.bucket}: {response.status_code}")
        if response.status_code in (200, 201):
            log.info("created Supabase storage bucket %s", self.bucket)

    async def put_image(
        self, name: str, data: bytes, *, width: int, height: int, content_type: str = "image/png"
    ) -> StoredImage:
        digest = hashlib.sha256(data).hexdigest()
        metadata = {"sha256": digest, "width": width, "height": height}
        response = await self._http.post(
            f"/object/{self.bucket}/{name}",
            content=data,
            headers={
                "Content-Type": content_type,
                "x-upsert": "true",
                "cache-control": "max-age=31536000",  # content never changes under a name
                "x-metadata": base64.b64encode(json.dumps(metadata).encode()).decode(),
            },
        )
        if response.status_code not in (200, 201):
            raise StorageError(
                f"Supabase upload {name} answered {response.status_code}: {response.text[:200]}"
            )
        return StoredImage(self.bucket, name, content_type, len(data), digest)

    async def get_image(self, name: str) -> bytes:
        response = await self._http.get(f"/object/{self.bucket}/{name}")
        if response.status_code != 200:
            raise StorageError(f"Supabase download {name} answered {response.status_code}")
        return response.content
