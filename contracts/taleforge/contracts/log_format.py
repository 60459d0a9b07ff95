"""The shape of every service's log lines: JSON (production) or text (development).

Both carry what joins a line to the rest of the story: the trace and span ids of the
current span, and the session and turn ids of the message being handled (`tracing`), so an
operator goes from a log line to its trace (`taleforge trace`, Jaeger) and back. Services
log ids, counts and reasons at INFO, never secrets or whole prompts.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from taleforge.contracts.tracing import log_fields

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **log_fields(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, then `[session_id=… turn_id=… trace_id=…]` when there are ids."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        line = super().formatMessage(record)
        fields = log_fields()
        fields.pop("span_id", None)
        if not fields:
            return line
        return f"{line} [{' '.join(f'{key}={value}' for key, value in fields.items())}]"


def log_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Every service's root logger, at start-up: one line per record on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
