"""Request and response bodies of the admin endpoints (`/api/admin/…`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taleforge.api.session_models import MAX_TITLE_CHARS, clean_title
from taleforge.contracts.events import SLUG_PATTERN, ImagePolicy, ScenarioSnapshot

MAX_TEMPLATE_CHARS = 60_000  # under API_MAX_BODY_BYTES (64 KiB by default)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable_text(self) -> _Request:
        # Every string goes into an event, a KV value and Postgres text: UTF-8 without NUL.
        for text in _strings(self.model_dump(mode="json")):
            if "\x00" in text:
                raise ValueError("text must not contain NUL characters")
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        return self


class ScenarioWrite(_Request):
    title: str = Field(max_length=MAX_TITLE_CHARS)
    summary: str = Field("", max_length=2000)
    opening: str = Field("", max_length=20_000, description="The first beat players read.")
    scenario: ScenarioSnapshot = Field(
        default_factory=ScenarioSnapshot,
        description="World, tone, rules, characters and image policy the narrator uses.",
    )
    published: bool = Field(True, description="Players can list and start it.")

    _clean = field_validator("title")(clean_title)


class ScenarioCreate(ScenarioWrite):
    scenario_id: str = Field(pattern=SLUG_PATTERN, examples=["greywater-ford"])


class AdminScenario(ScenarioCreate):
    model_config = ConfigDict(extra="ignore")

    created_at: datetime
    updated_at: datetime


class NarratorSettingsChange(_Request):
    """Fields to change; a field set to null goes back to the narrator's configured default.

    The constraints are the narrator's own (its `LiveSettings`), so a value accepted here is
    one the narrator applies.
    """

    model: str | None = Field(None, min_length=1, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | None = Field(None, ge=16, le=1_000_000)
    context_budget_tokens: int | None = Field(None, ge=256, le=10_000_000)
    summary_model: str | None = Field(None, min_length=1, max_length=200)
    summary_max_output_tokens: int | None = Field(None, ge=16, le=1_000_000)
    image_policy: ImagePolicy | None = Field(
        None, description="Overrides every scenario's image policy when set."
    )

    def changes(self) -> dict[str, str | None]:
        """The fields sent, as the KV values the narrator reads (None: remove the key)."""
        raw = self.model_dump(mode="json", include=self.model_fields_set)
        return {key: None if value is None else str(value) for key, value in raw.items()}


NARRATOR_FIELDS = tuple(NarratorSettingsChange.model_fields)


class NarratorSettingsPublic(BaseModel):
    overrides: dict[str, str] = Field(
        description="Live values in effect; every other field has the narrator's env default."
    )
    fields: list[str] = Field(default_factory=lambda: list(NARRATOR_FIELDS))
    revision: int = Field(description="The settings bucket's last revision.")


class TemplateWrite(_Request):
    workflow: dict[str, Any] = Field(description="A ComfyUI workflow in API format.")

    @field_validator("workflow")
    @classmethod
    def _api_format(cls, workflow: dict[str, Any]) -> dict[str, Any]:
        if not workflow:
            raise ValueError("the workflow has no nodes")
        for node_id, node in workflow.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
                raise ValueError(f"node {node_id!r} needs a string 'class_type' (API format)")
            if not isinstance(node.get("inputs", {}), dict):
                raise ValueError(f"node {node_id!r}: 'inputs' must be an object")
        if len(json.dumps(workflow)) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"the workflow is longer than {MAX_TEMPLATE_CHARS} characters")
        return workflow


class TemplatePublic(BaseModel):
    kind: str
    version: int = Field(description="0: as shipped; else the template bucket's revision.")
    source: Literal["shipped", "registered"]


class IllustratorSettingsPublic(BaseModel):
    templates: list[TemplatePublic]


class SettingsChangePublic(BaseModel):
    event_id: UUID
    service: str
    changes: dict[str, str | None]
    revision: int | None
    changed_by: UUID
    changed_at: datetime


class UserUsage(BaseModel):
    user_id: UUID
    sessions: int
    completed_turns: int
    total_tokens: int
    cost_usd: Decimal
    last_active: datetime | None


class UsersPage(BaseModel):
    items: list[UserUsage]
    days: int
    limit: int
    offset: int
    next_offset: int | None = None


class DeadLetterPublic(BaseModel):
    stream_seq: int | None
    subject: str | None
    reason: str | None
    delivery_count: int | None
    payload: str | None = Field(description="The message as received (cut at 4000 characters).")
    first_seen_at: datetime
    last_seen_at: datetime
    retry_count: int
    last_retried_at: datetime | None
    retried_as_seq: int | None


class DeadLettersPage(BaseModel):
    items: list[DeadLetterPublic]
    limit: int
    offset: int
    next_offset: int | None = None


class DeadLetterRetryAccepted(BaseModel):
    stream_seq: int
    retried_as_seq: int = Field(description="Stream sequence of the re-published copy.")
