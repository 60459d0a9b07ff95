"""Progress bars (tqdm, as the persistence rebuild uses) and Ctrl-C that stops cleanly.

Bars go to stderr, so `--json` output on stdout stays clean for tools, and only when stderr
is a terminal (tqdm's own check) and the work is long enough to be worth one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from tqdm import tqdm


class Progress:
    """A tqdm bar with rate and ETA; silent below `min_total` items or off a terminal."""

    def __init__(
        self, *, total: int, desc: str, unit: str, min_total: int = 0, enabled: bool = True
    ) -> None:
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            # None: tqdm disables itself when stderr is not a terminal.
            disable=True if not enabled or total < min_total else None,
            leave=False,
        )

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def note(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()


def run_until_interrupted(work: Coroutine[Any, Any, int], *, on_interrupt: int = 130) -> int:
    """Run `work`; on Ctrl-C it is cancelled (its cleanup runs) and `on_interrupt` returned.

    asyncio.run turns the first SIGINT into a cancellation of the main task, so consumers
    are deleted and connections closed before this returns; no traceback is printed.
    """
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)", file=sys.stderr, flush=True)
        return on_interrupt
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
