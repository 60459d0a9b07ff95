"""Narrator configuration, read from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from taleforge.contracts.events import ImagePolicy
from taleforge.narrator.live_settings import LIVE_FIELDS, LiveSettings
from taleforge.narrator.pricing import DEFAULT_PRICES, ModelPrice


class Settings(BaseSettings):
    # Tuning is NARRATOR_<FIELD>; infrastructure names are unprefixed (their own aliases).
    # populate_by_name lets tests pass field names as keyword arguments.
    model_config = SettingsConfigDict(env_prefix="NARRATOR_", extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias="NATS_URL")
    openai_base_url: str = Field("http://127.0.0.1:8100/v1", validation_alias="OPENAI_BASE_URL")
    # The sandbox accepts any key, so development needs none.
    openai_api_key: SecretStr = Field(SecretStr("sk-sandbox"), validation_alias="OPENAI_API_KEY")
    api: Literal["responses", "chat"] = "responses"
    model: str = "gpt-4.1-mini"
    temperature: float = Field(0.8, ge=0, le=2)
    max_output_tokens: int = Field(400, ge=16)
    request_timeout_s: float = Field(60.0, gt=0)
    stall_timeout_s: float = Field(15.0, gt=0)
    openai_max_retries: int = Field(1, ge=0)
    ack_wait_s: float = Field(30.0, gt=0)
    max_deliver: int = Field(5, ge=1)
    retry_backoff_s: float = Field(1.0, ge=0)
    retry_backoff_max_s: float = Field(30.0, ge=0)
    image_style: str = "painterly storybook illustration, dramatic lighting, rich colour"
    concurrency: int = Field(16, ge=1)
    context_budget_tokens: int = Field(6000, ge=256)
    fold_keep_fraction: float = Field(0.5, gt=0, le=1)
    summary_model: str = "gpt-4.1-nano"
    summary_max_output_tokens: int = Field(300, ge=16)
    tokenizer: str = "approx"
    image_policy: ImagePolicy | None = None
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    retry_jitter: float = Field(0.2, ge=0, le=1)
    settings_bucket: str = "narrator-settings"
    sessions_bucket: str = "narrator-sessions"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field("json", validation_alias="LOG_FORMAT")
    consumer_name: str = Field("narrator", validation_alias="NARRATOR_CONSUMER")

    def live_defaults(self) -> LiveSettings:
        """The run-time-changeable settings as configured at start-up."""
        return LiveSettings(**self.model_dump(include=set(LIVE_FIELDS)))

    @property
    def graceful_timeout_s(self) -> float:
        # Above the longest call, so a shutdown lets the turn in hand finish.
        return self.request_timeout_s + 10.0
