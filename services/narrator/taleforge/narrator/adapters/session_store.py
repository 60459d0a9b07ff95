"""Session state in the `narrator-sessions` KV bucket: one key per session, JSON.

Writes use the revision read (optimistic concurrency), so two narrators never silently
overwrite each other's story; a cache keeps the hot path to one KV write per turn.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from taleforge.narrator.model import TransientModelError
from taleforge.narrator.story import SessionState

log = logging.getLogger(__name__)

CACHED_SESSIONS = 10_000


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        log.info("creating KV bucket %s", bucket)
        return await js.create_key_value(KeyValueConfig(bucket=bucket))


class KvSessionStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._cache: OrderedDict[uuid.UUID, tuple[SessionState, int]] = OrderedDict()

    async def load(self, session_id: uuid.UUID) -> SessionState | None:
        cached = self._cache.get(session_id)
        if cached is not None:
            self._cache.move_to_end(session_id)
            return cached[0]
        try:
            entry = await self._kv.get(str(session_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        state = SessionState.model_validate_json(entry.value)
        self._remember(state, entry.revision)
        return state

    async def save(self, state: SessionState) -> None:
        key, value = str(state.session_id), state.model_dump_json().encode()
        cached = self._cache.get(state.session_id)
        try:
            if cached is None:
                revision = await self._kv.create(key, value)
            else:
                revision = await self._kv.update(key, value, last=cached[1])
        except KeyWrongLastSequenceError as exc:
            # Someone else wrote this session (another narrator): re-read and try again.
            self._cache.pop(state.session_id, None)
            raise TransientModelError(
                "state_conflict", f"session {state.session_id} changed underneath us"
            ) from exc
        self._remember(state, revision)

    def _remember(self, state: SessionState, revision: int) -> None:
        self._cache[state.session_id] = (state, revision)
        self._cache.move_to_end(state.session_id)
        while len(self._cache) > CACHED_SESSIONS:
            self._cache.popitem(last=False)
