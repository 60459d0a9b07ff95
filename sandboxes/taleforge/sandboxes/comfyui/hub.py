"""Websocket clients by clientId, with ComfyUI's message framing."""

from __future__ import annotations

import logging
import struct
from typing import Any

from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1  # binary event type for sampler previews
JPEG_FORMAT = 1  # image format word that follows the event type


class SocketHub:
    def __init__(self) -> None:
        self.sockets: dict[str, WebSocket] = {}

    def attach(self, sid: str, ws: WebSocket) -> None:
        # Like ComfyUI: a reconnect with the same clientId silently replaces the old socket.
        self.sockets[sid] = ws

    def detach(self, sid: str, ws: WebSocket) -> None:
        if self.sockets.get(sid) is ws:
            del self.sockets[sid]

    def _targets(self, sid: str | None) -> list[WebSocket]:
        if sid is None:
            return list(self.sockets.values())
        ws = self.sockets.get(sid)
        return [ws] if ws is not None else []

    async def send_json(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        for ws in self._targets(sid):
            try:
                await ws.send_json({"type": event, "data": data})
            except Exception as exc:  # a vanished client must not break the run
                log.warning("send error: %s", exc)

    async def send_preview(self, image_format: int, payload: bytes, sid: str | None) -> None:
        frame = struct.pack(">II", PREVIEW_IMAGE, image_format) + payload
        for ws in self._targets(sid):
            try:
                await ws.send_bytes(frame)
            except Exception as exc:
                log.warning("send error: %s", exc)

    async def drop(self, sid: str) -> None:
        """Close a client's socket abruptly (fault injection)."""
        ws = self.sockets.pop(sid, None)
        if ws is not None:
            try:
                await ws.close(code=1011, reason="sandbox fault: dropped connection")
            except Exception as exc:
                log.warning("close error: %s", exc)
