"""Run benchmarks: `python -m benchmarks [name ...]` (default: all).

Every module in this folder with an `async def main() -> None` is a benchmark; it prints its
figures. Figures that compare things are measured side by side in one run, as ratios.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path


def discover() -> dict[str, Callable[[], Awaitable[None]]]:
    found = {}
    for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"benchmarks.{module.name}")
        if callable(getattr(loaded, "main", None)):
            found[module.name] = loaded.main
    return found


def main(argv: list[str]) -> int:
    benchmarks = discover()
    unknown = [name for name in argv if name not in benchmarks]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(benchmarks)}")
        return 2
    for name in argv or list(benchmarks):
        print(f"== {name}", flush=True)
        asyncio.run(benchmarks[name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
