"""The stack the storm runs on: every service a process, two API replicas, real NATS and
Postgres, both sandboxes paced so that there is a *middle* to strike in.

Tuning (all ordinary service settings, shortened so recovery fits in a test run): ack waits
of a few seconds (heartbeats keep long work alive), short retry backoffs, a 3 s stall
timeout and an 8 s render timeout. Per-user limits are raised out of the way: the players
are few and play far faster than people.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taleforge.cli.dev import DevConfig, DevStack
from taleforge.cli.processes import LogSink

SERVICE_ENV = {
    "NARRATOR_ACK_WAIT_S": "6",
    "NARRATOR_STALL_TIMEOUT_S": "3",
    "NARRATOR_REQUEST_TIMEOUT_S": "20",
    "NARRATOR_RETRY_BACKOFF_S": "0.5",
    "NARRATOR_RETRY_BACKOFF_MAX_S": "4",
    # Pictures when the model says the scene changed (about every other turn): one ComfyUI
    # renders one picture at a time, as the real one does.
    "NARRATOR_IMAGE_POLICY": "on_scene_change",
    "ILLUSTRATOR_ACK_WAIT_S": "6",
    "ILLUSTRATOR_RENDER_TIMEOUT_S": "8",
    "ILLUSTRATOR_RETRY_BACKOFF_S": "0.5",
    "ILLUSTRATOR_CONCURRENCY": "2",
    "PERSISTENCE_ACK_WAIT_S": "5",
    "PERSISTENCE_RETRY_MAX_S": "4",
    # Players far faster than people: per-player limits off; heartbeats show a dead stream.
    "API_RATE_LIMIT_PER_MIN": "0",
    "API_DAILY_TOKEN_BUDGET": "0",
    "API_DAILY_COST_BUDGET_USD": "0",
    "API_SSE_HEARTBEAT_S": "2",
}


def storm_seed() -> int:
    value = os.environ.get("TALEFORGE_FAULTS_SEED")
    return int(value) if value else random.SystemRandom().randrange(1, 10**6)


@pytest.fixture(scope="module")
def storm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    data_dir = tmp_path_factory.mktemp("storm")
    config = DevConfig.ephemeral(
        data_dir,
        openai_token_delay_ms=15,
        openai_first_token_delay_ms=100,
        comfyui_render_ms=400,
        api_replicas=2,
        extra_env=SERVICE_ENV,
    )
    log_file = Path(data_dir) / "stack.log"
    stack = DevStack(config, sink=LogSink(stream=None, file=log_file))
    try:
        stack.start(timeout=120)
        yield stack
    finally:
        stack.stop()
        sys.stdout.write(f"\nstack log: {log_file}\n")
