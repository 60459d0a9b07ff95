"""The whole stack as separate processes: real NATS and Postgres, both sandboxes, 4 services."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taleforge.cli.dev import DevConfig, DevStack
from taleforge.cli.processes import LogSink


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    data_dir = tmp_path_factory.mktemp("stack")
    config = DevConfig.ephemeral(data_dir, openai_token_delay_ms=0, comfyui_render_ms=50)
    log_file = Path(data_dir) / "stack.log"
    stack = DevStack(config, sink=LogSink(stream=None, file=log_file))
    try:
        stack.start(timeout=90)
        yield stack
    finally:
        stack.stop()
        # Shown by pytest only when a test failed: the services' own account of it.
        if log_file.exists():
            sys.stdout.write(log_file.read_text()[-20_000:])
