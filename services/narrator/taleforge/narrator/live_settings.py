"""Settings an operator can change while the narrator runs, and the values a turn used.

Defaults come from the environment; the `narrator-settings` KV bucket overrides them, one
key per field (e.g. `nats kv put narrator-settings model gpt-4.1`; delete the key to go
back to the default). Each turn reads `current()` once and records what it used.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from taleforge.contracts.events import ImagePolicy


class LiveSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int = Field(ge=16)
    context_budget_tokens: int = Field(ge=256)
    summary_model: str = Field(min_length=1)
    summary_max_output_tokens: int = Field(ge=16)
    image_policy: ImagePolicy | None = Field(
        default=None, description="Overrides every scenario's policy when set."
    )


LIVE_FIELDS = frozenset(LiveSettings.model_fields)


class SettingsSource(Protocol):
    async def current(self) -> LiveSettings:
        """The settings for the next turn (changes already made are visible)."""
        ...


class FixedSettings:
    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings

    async def current(self) -> LiveSettings:
        return self.settings


def apply_override(base: LiveSettings, overrides: dict[str, str]) -> LiveSettings:
    """`base` with the overrides (raw strings from KV) applied; raises ValueError if invalid."""
    values = base.model_dump()
    for key, raw in overrides.items():
        values[key] = None if raw.strip().lower() in ("", "null", "none") else raw.strip()
    return LiveSettings.model_validate(values)
