"""Child processes with prefixed, interleaved logs and an orderly stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from taleforge.cli.embedded import die_with_parent

COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m", "\033[37m"]
RESET = "\033[0m"


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)  # everything it printed, for diagnostics
    _pump: threading.Thread | None = None

    def start(self, sink: Callable[[str, str], None]) -> None:
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._pump = threading.Thread(target=self._read, args=(sink,), daemon=True)
        self._pump.start()

    def _read(self, sink: Callable[[str, str], None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            sink(self.name, line)

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if needle in line:
                    return line
            seen = len(self.lines)
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = "\n".join(self.lines[-30:])
        raise RuntimeError(f"{self.name}: no line with {needle!r} within {timeout}s:\n{tail}")

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._pump is not None:
            self._pump.join(timeout=2)


class LogSink:
    """Writes `[name] line` to a stream (coloured on a terminal) and/or a file."""

    def __init__(self, stream: IO[str] | None = sys.stdout, file: Path | None = None) -> None:
        self.stream = stream
        self.file = open(file, "a", buffering=1) if file else None  # noqa: SIM115
        self.colour = bool(stream and stream.isatty())
        self._colours: dict[str, str] = {}
        self._lock = threading.Lock()
        self.width = 11

    def __call__(self, name: str, line: str) -> None:
        with self._lock:
            label = f"{name:<{self.width}}|"
            if self.stream is not None:
                if self.colour:
                    colour = self._colours.setdefault(name, COLOURS[len(self._colours) % 7])
                    label = f"{colour}{label}{RESET}"
                self.stream.write(f"{label} {line}\n")
                self.stream.flush()
            if self.file is not None:
                self.file.write(f"{name:<{self.width}}| {line}\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
