"""Image bytes in a NATS JetStream object store bucket."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    bucket: str
    object_name: str
    content_type: str
    size_bytes: int
    sha256: str


def object_name(session_id: object, image_id: object) -> str:
    return f"{session_id}/{image_id}.png"


class ImageStore:
    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self._store = store
        self.bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str) -> ImageStore:
        """Bind to `bucket`, creating it if missing (the illustrator owns it)."""
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:
            config = ObjectStoreConfig(
                description="Taleforge rendered images", storage=StorageType.FILE
            )
            store = await js.create_object_store(bucket, config=config)
            log.info("created object store bucket %s", bucket)
        return cls(store, bucket)

    async def put_image(
        self, name: str, data: bytes, *, width: int, height: int, content_type: str = "image/png"
    ) -> StoredImage:
        """Store (or overwrite: a redelivered request writes the same bytes) one image."""
        digest = hashlib.sha256(data).hexdigest()
        # Headers in the Go client's shape (name -> list of values) so `nats object` reads them.
        meta = ObjectMeta(
            name=name,
            description=f"{width}x{height} {content_type}",
            headers={
                "Content-Type": [content_type],
                "Taleforge-Sha256": [digest],
                "Taleforge-Width": [str(width)],
                "Taleforge-Height": [str(height)],
            },
        )
        await self._store.put(name, data, meta=meta)
        return StoredImage(self.bucket, name, content_type, len(data), digest)

    async def get_image(self, name: str) -> bytes:
        result = await self._store.get(name)
        return result.data or b""
