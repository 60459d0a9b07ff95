"""Request and response bodies for sessions as a whole, their history, saves and scenarios."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taleforge.api.models import SessionPublic, TurnPublic
from taleforge.api.text import normalize_text

# What FastAPI's `responses=` takes: extra documented answers per status code.
Responses = dict[int | str, dict[str, Any]]

MAX_TITLE_CHARS = 200
PAGE_LIMIT = 100  # the most items one page may ask for
MAX_OFFSET = 1_000_000  # deeper than any real listing; keeps the number a Postgres bigint
MAX_SEQ = 2**31 - 1  # turns.seq is a Postgres integer


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def clean_title(value: str) -> str:
    """One line, normalised; a title of nothing but spaces or control characters is refused."""
    title = normalize_text(value).replace("\n", " ")
    if not title:
        raise ValueError("title must not be empty")
    return title


class SessionRename(_Request):
    title: str = Field(max_length=MAX_TITLE_CHARS, examples=["The ferry at midnight"])

    _clean = field_validator("title")(clean_title)


class SessionsPage(BaseModel):
    """My sessions, most recently played first."""

    items: list[SessionPublic]
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="Pass as `offset` for the next page.")


class TurnsPage(BaseModel):
    """Turns of the session's story line, oldest first; older ones via `older_url`."""

    items: list[TurnPublic]
    next_before: int | None = Field(
        None, description="Pass as `before` for the older turns; None: this is the beginning."
    )
    older_url: str | None = None


class SessionDetail(SessionPublic):
    history: TurnsPage


class SaveCreate(_Request):
    session_id: UUID
    title: str = Field(max_length=MAX_TITLE_CHARS, examples=["Before the crossing"])

    _clean = field_validator("title")(clean_title)


class SavePublic(BaseModel):
    save_id: UUID
    session_id: UUID
    turn_id: UUID | None = Field(
        None, description="The last completed turn the save keeps; None: the opening."
    )
    turn_seq: int | None = Field(None, description="That turn's position in the session.")
    title: str
    created_at: datetime


class SavesPage(BaseModel):
    """My saves, newest first."""

    items: list[SavePublic]
    limit: int
    offset: int
    next_offset: int | None = None


class ScenarioPublic(BaseModel):
    """A scenario a player can start a session from."""

    scenario_id: str
    title: str
    opening: str
