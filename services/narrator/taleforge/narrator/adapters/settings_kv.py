"""Live settings from a watched KV bucket (`narrator-settings`), one key per field."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.kv import KeyValue

from taleforge.narrator.live_settings import LIVE_FIELDS, LiveSettings, apply_override

log = logging.getLogger(__name__)

SYNC_TIMEOUT_S = 1.0


class KvSettings:
    """`current()` is the defaults plus every valid override seen in the bucket so far.

    Before answering it checks the bucket's last revision, so a change made before a turn
    was requested is always picked up by that turn (one small request per turn).
    """

    def __init__(self, kv: KeyValue, defaults: LiveSettings) -> None:
        self._kv = kv
        self._defaults = defaults
        self._overrides: dict[str, str] = {}
        self._current = defaults
        self._seen_revision = 0
        self._start_revision = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Revisions up to here that the initial values lack are gone (compacted delete
        # markers); once the initial values are in, they count as seen.
        self._start_revision = await self._last_revision()
        watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._watch(watcher))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _last_revision(self) -> int:
        status = await self._kv.status()
        return status.stream_info.state.last_seq

    async def current(self) -> LiveSettings:
        last = await self._last_revision()
        if last > self._seen_revision:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_TIMEOUT_S), self._changed:
                    await self._changed.wait_for(lambda: self._seen_revision >= last)
        return self._current

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the end of the initial values
                await self._seen(self._start_revision)
                continue
            key, raw = entry.key, (entry.value or b"").decode()
            if key not in LIVE_FIELDS:
                log.warning("ignoring unknown live setting %r", key)
            elif entry.operation in ("DEL", "PURGE"):
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = raw
            try:
                self._current = apply_override(self._defaults, self._overrides)
                log.info("live settings now %s", self._current.model_dump(exclude_none=True))
            except ValueError as exc:
                log.error("ignoring invalid live setting %s=%r: %s", key, raw, exc)
                self._overrides.pop(key, None)
            await self._seen(entry.revision or 0)

    async def _seen(self, revision: int) -> None:
        async with self._changed:
            self._seen_revision = max(self._seen_revision, revision)
            self._changed.notify_all()
