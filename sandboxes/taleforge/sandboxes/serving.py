"""Run a sandbox ASGI app with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve_forever(
    app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "info"
) -> None:
    """Serve until interrupted. Prints the URL it listens on (port 0 picks a free one)."""
    sock = _bound_socket(host, port)
    actual = sock.getsockname()[1]
    print(f"listening on http://{host}:{actual}", flush=True)
    config = uvicorn.Config(app, log_level=log_level, ws="websockets-sansio", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` in a daemon thread for the duration of the block; yields its base URL."""
    sock = _bound_socket(host, port)
    actual = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{actual}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
