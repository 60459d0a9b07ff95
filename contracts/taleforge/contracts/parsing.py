"""Turning bytes off the bus into events, with errors a person can act on."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from taleforge.contracts.envelope import Envelope
from taleforge.contracts.events import LIVE_EVENTS, STREAM_EVENTS, StoryEvent

_STREAM_TYPES: dict[str, type[Envelope]] = {cls.TYPE: cls for cls in STREAM_EVENTS}
_LIVE_TYPES: dict[str, type[Envelope]] = {cls.TYPE: cls for cls in LIVE_EVENTS}
_story_adapter: TypeAdapter[StoryEvent] = TypeAdapter(StoryEvent)


class InvalidEvent(ValueError):
    """A payload that is not a valid Taleforge event. `reason` says why, in one line."""

    def __init__(self, reason: str, *, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_type = event_type


def _load(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        loaded = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"payload is not JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise InvalidEvent(f"payload must be a JSON object, got {type(loaded).__name__}")
    return loaded


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        problems.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")


def _validate(payload: dict[str, Any], known: dict[str, type[Envelope]]) -> Envelope:
    event_type = payload.get("type")
    if not isinstance(event_type, str):
        raise InvalidEvent("missing event type (the 'type' field)")
    cls = known.get(event_type)
    if cls is None:
        raise InvalidEvent(f"unknown event type {event_type!r}", event_type=event_type)
    version = payload.get("schema_version")
    if version != cls.VERSION:
        raise InvalidEvent(
            f"unsupported schema_version {version!r} for {event_type} (this code reads "
            f"version {cls.VERSION})",
            event_type=event_type,
        )
    try:
        return cls.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(
            f"invalid {event_type}: {_describe(exc)}", event_type=event_type
        ) from exc


def parse_event(data: bytes | str | dict[str, Any]) -> StoryEvent:
    """Parse one stream event, or raise `InvalidEvent` saying what is wrong."""
    event = _validate(_load(data), _STREAM_TYPES)
    return _story_adapter.validate_python(event)


def parse_live_event(data: bytes | str | dict[str, Any]) -> Envelope:
    """Parse one live (core NATS) event, or raise `InvalidEvent`."""
    return _validate(_load(data), _LIVE_TYPES)
