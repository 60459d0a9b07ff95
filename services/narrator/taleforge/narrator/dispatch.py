"""Many sessions at once, each session's messages strictly one after another.

Messages arrive in stream order from one fetch loop and are queued per session; each
session with work has one worker task. A session whose turn is being retried holds only
its own queue, never another session's. The consumer's `max_ack_pending` (= concurrency)
bounds how many messages are in hand, so it also bounds the concurrent model calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class SessionDispatcher(Generic[Item]):
    def __init__(self, handle: Callable[[Item], Awaitable[None]]) -> None:
        self._handle = handle
        self._queues: dict[str, deque[Item]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    @property
    def active_sessions(self) -> int:
        return len(self._workers)

    def submit(self, session_key: str, item: Item) -> None:
        """Queue the item behind the session's earlier ones (synchronous: order is kept)."""
        queue = self._queues.setdefault(session_key, deque())
        queue.append(item)
        if session_key not in self._workers:
            self._workers[session_key] = asyncio.create_task(self._work(session_key))

    async def _work(self, session_key: str) -> None:
        queue = self._queues[session_key]
        try:
            while queue:
                item = queue[0]
                try:
                    await self._handle(item)
                except Exception:
                    log.exception("unhandled error in session %s", session_key)
                finally:
                    queue.popleft()
        finally:
            del self._workers[session_key]
            del self._queues[session_key]

    async def drain(self, timeout_s: float) -> None:
        """Wait for the sessions' current items to finish (cancel them after `timeout_s`)."""
        for queue in self._queues.values():
            while len(queue) > 1:
                queue.pop()
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
