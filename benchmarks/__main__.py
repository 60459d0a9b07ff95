"""Run every benchmark: `python -m benchmarks [name ...]`."""

from __future__ import annotations

import asyncio
import sys

from benchmarks import turn_latency

BENCHMARKS = {"turn_latency": turn_latency.main}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    for name in names:
        print(f"== {name}", flush=True)
        asyncio.run(BENCHMARKS[name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
