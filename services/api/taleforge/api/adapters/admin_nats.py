"""What the admin endpoints need from NATS beyond publishing events: the services' live
settings in their KV buckets, and stream messages read and re-published by sequence.

The buckets belong to the services (they create them on start and watch them); the API
writes the same keys an operator would with `nats kv put`, and creates a bucket with the
service's own configuration only if the service has not started yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from taleforge.api.adapters.bus import BusUnavailable, EventBus
from taleforge.contracts import MSG_ID_HEADER, STREAM_NAME


@dataclass(frozen=True)
class StreamMessage:
    subject: str
    data: bytes
    headers: dict[str, str]


class AdminNats:
    def __init__(
        self,
        bus: EventBus,
        *,
        narrator_bucket: str,
        templates_bucket: str,
        timeout_s: float = 5.0,
    ) -> None:
        self._bus = bus
        self._narrator = KeyValueConfig(bucket=narrator_bucket)  # as the narrator makes it
        # As the illustrator makes it: old versions stay readable to reproduce an image.
        self._templates = KeyValueConfig(
            bucket=templates_bucket,
            description="Taleforge illustrator workflow templates (key = image kind)",
            history=64,
            storage=StorageType.FILE,
        )
        self._timeout = timeout_s

    def _js(self) -> JetStreamContext:
        return self._bus.broker.connection.jetstream(timeout=self._timeout)

    async def _bucket(self, config: KeyValueConfig) -> KeyValue:
        js = self._js()
        try:
            return await js.key_value(config.bucket)
        except BucketNotFoundError:
            return await js.create_key_value(config)

    @staticmethod
    async def _values(kv: KeyValue) -> tuple[dict[str, str], int]:
        values: dict[str, str] = {}
        watcher = await kv.watchall(ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    break
                values[entry.key] = (entry.value or b"").decode()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        status = await kv.status()
        return values, int(status.stream_info.state.last_seq)

    async def narrator_settings(self) -> tuple[dict[str, str], int]:
        """The narrator's live overrides and the bucket's revision."""
        try:
            return await self._values(await self._bucket(self._narrator))
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"could not read the narrator settings: {exc!r}") from exc

    async def change_narrator_settings(self, changes: dict[str, str | None]) -> int:
        """Put (or, for None, delete) each key; the narrator applies them as it sees them."""
        return await self._change(self._narrator, changes, "narrator settings")

    async def templates(self) -> dict[str, int]:
        """Registered template versions (KV revisions) by image kind."""
        try:
            kv = await self._bucket(self._templates)
            values, _ = await self._values(kv)
            return {kind: int((await kv.get(kind)).revision or 0) for kind in values}
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"could not read the illustrator templates: {exc!r}") from exc

    async def change_template(self, kind: str, workflow: str | None) -> int:
        """Register a new version of `kind`'s template (None: back to the shipped one)."""
        return await self._change(self._templates, {kind: workflow}, "illustrator templates")

    async def _change(
        self, config: KeyValueConfig, changes: dict[str, str | None], what: str
    ) -> int:
        try:
            kv = await self._bucket(config)
            for key, value in changes.items():
                if value is None:
                    await kv.delete(key)
                else:
                    await kv.put(key, value.encode())
            return int((await kv.status()).stream_info.state.last_seq)
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"could not change the {what}: {exc!r}") from exc

    async def stream_message(self, seq: int) -> StreamMessage | None:
        """The STORY stream's message at `seq`; None when it is gone (aged out, deleted)."""
        try:
            raw = await self._js().get_msg(STREAM_NAME, seq)
        except NotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"could not read stream message {seq}: {exc!r}") from exc
        return StreamMessage(raw.subject or "", raw.data or b"", dict(raw.headers or {}))

    async def republish(self, message: StreamMessage, msg_id: str) -> int:
        """Publish a copy of `message` under a new msg id; returns the copy's sequence."""
        headers = {**message.headers, MSG_ID_HEADER: msg_id}
        try:
            ack = await self._js().publish(
                message.subject,
                message.data,
                stream=STREAM_NAME,
                headers=headers,
                timeout=self._timeout,
            )
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"could not re-publish {message.subject}: {exc!r}") from exc
        return int(ack.seq)
