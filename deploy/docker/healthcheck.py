"""Container health checks, run by each image's HEALTHCHECK with the service's own Python.

    python /app/healthcheck.py http URL          a GET that answers 2xx (the API's /healthz)
    python /app/healthcheck.py consumer NAME     NATS answers and the STORY stream has the
                                                 durable consumer NAME (a worker's check)

A worker with no HTTP port is healthy when it can reach NATS and its consumer exists: the
consumer is created (or updated) by the worker's own start-up, so this also says the worker got
past it. Exit status 0 is healthy, 1 is not; one line on stderr says why.
"""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request

TIMEOUT_S = 4.0


def check_http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{url} answered {response.status}")


async def check_consumer(name: str) -> None:
    # Only the workers' images have these (the sandboxes image checks over HTTP).
    import nats

    from taleforge.contracts import STREAM_NAME

    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    nc = await nats.connect(
        url, connect_timeout=TIMEOUT_S, allow_reconnect=False, max_reconnect_attempts=0
    )
    try:
        await nc.jetstream(timeout=TIMEOUT_S).consumer_info(STREAM_NAME, name)
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"http", "consumer"}:
        print(__doc__, file=sys.stderr)
        return 2
    kind, target = argv
    try:
        if kind == "http":
            check_http(target)
        else:
            asyncio.run(check_consumer(target))
    except Exception as exc:  # any failure is "unhealthy", said in one line
        print(f"unhealthy: {kind} {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
