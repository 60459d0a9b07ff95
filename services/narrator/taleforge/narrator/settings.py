"""Narrator configuration, read from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from taleforge.contracts.events import ImagePolicy
from taleforge.narrator.live_settings import LiveSettings
from taleforge.narrator.pricing import DEFAULT_PRICES, ModelPrice


def _env(name: str, field: str) -> AliasChoices:
    # Read the documented env name; also accept the field name, so tests can pass kwargs.
    return AliasChoices(name, field)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_env("NATS_URL", "nats_url"))
    openai_base_url: str = Field(
        "http://127.0.0.1:8100/v1", validation_alias=_env("OPENAI_BASE_URL", "openai_base_url")
    )
    # The sandbox accepts any key, so development needs none.
    openai_api_key: SecretStr = Field(
        SecretStr("sk-sandbox"), validation_alias=_env("OPENAI_API_KEY", "openai_api_key")
    )
    api: Literal["responses", "chat"] = Field(
        "responses", validation_alias=_env("NARRATOR_API", "api")
    )
    model: str = Field("gpt-4.1-mini", validation_alias=_env("NARRATOR_MODEL", "model"))
    temperature: float = Field(
        0.8, ge=0, le=2, validation_alias=_env("NARRATOR_TEMPERATURE", "temperature")
    )
    max_output_tokens: int = Field(
        400, ge=16, validation_alias=_env("NARRATOR_MAX_OUTPUT_TOKENS", "max_output_tokens")
    )
    request_timeout_s: float = Field(
        60.0, gt=0, validation_alias=_env("NARRATOR_REQUEST_TIMEOUT_S", "request_timeout_s")
    )
    stall_timeout_s: float = Field(
        15.0, gt=0, validation_alias=_env("NARRATOR_STALL_TIMEOUT_S", "stall_timeout_s")
    )
    openai_max_retries: int = Field(
        1, ge=0, validation_alias=_env("NARRATOR_OPENAI_MAX_RETRIES", "openai_max_retries")
    )
    ack_wait_s: float = Field(
        30.0, gt=0, validation_alias=_env("NARRATOR_ACK_WAIT_S", "ack_wait_s")
    )
    max_deliver: int = Field(5, ge=1, validation_alias=_env("NARRATOR_MAX_DELIVER", "max_deliver"))
    retry_backoff_s: float = Field(
        1.0, ge=0, validation_alias=_env("NARRATOR_RETRY_BACKOFF_S", "retry_backoff_s")
    )
    retry_backoff_max_s: float = Field(
        30.0, ge=0, validation_alias=_env("NARRATOR_RETRY_BACKOFF_MAX_S", "retry_backoff_max_s")
    )
    image_style: str = Field(
        "painterly storybook illustration, dramatic lighting, rich colour",
        validation_alias=_env("NARRATOR_IMAGE_STYLE", "image_style"),
    )
    concurrency: int = Field(16, ge=1, validation_alias=_env("NARRATOR_CONCURRENCY", "concurrency"))
    context_budget_tokens: int = Field(
        6000,
        ge=256,
        validation_alias=_env("NARRATOR_CONTEXT_BUDGET_TOKENS", "context_budget_tokens"),
    )
    fold_keep_fraction: float = Field(
        0.5, gt=0, le=1, validation_alias=_env("NARRATOR_FOLD_KEEP_FRACTION", "fold_keep_fraction")
    )
    summary_model: str = Field(
        "gpt-4.1-nano", validation_alias=_env("NARRATOR_SUMMARY_MODEL", "summary_model")
    )
    summary_max_output_tokens: int = Field(
        300,
        ge=16,
        validation_alias=_env("NARRATOR_SUMMARY_MAX_OUTPUT_TOKENS", "summary_max_output_tokens"),
    )
    tokenizer: str = Field("approx", validation_alias=_env("NARRATOR_TOKENIZER", "tokenizer"))
    image_policy: ImagePolicy | None = Field(
        None, validation_alias=_env("NARRATOR_IMAGE_POLICY", "image_policy")
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        validation_alias=_env("NARRATOR_PRICES", "prices"),
    )
    retry_jitter: float = Field(
        0.2, ge=0, le=1, validation_alias=_env("NARRATOR_RETRY_JITTER", "retry_jitter")
    )
    settings_bucket: str = Field(
        "narrator-settings", validation_alias=_env("NARRATOR_SETTINGS_BUCKET", "settings_bucket")
    )
    sessions_bucket: str = Field(
        "narrator-sessions", validation_alias=_env("NARRATOR_SESSIONS_BUCKET", "sessions_bucket")
    )
    log_level: str = Field("INFO", validation_alias=_env("NARRATOR_LOG_LEVEL", "log_level"))
    consumer_name: str = Field(
        "narrator", validation_alias=_env("NARRATOR_CONSUMER", "consumer_name")
    )

    def live_defaults(self) -> LiveSettings:
        """The run-time-changeable settings as configured at start-up."""
        return LiveSettings(
            model=self.model,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            context_budget_tokens=self.context_budget_tokens,
            summary_model=self.summary_model,
            summary_max_output_tokens=self.summary_max_output_tokens,
            image_policy=self.image_policy,
        )

    @property
    def graceful_timeout_s(self) -> float:
        # Above the longest call, so a shutdown lets the turn in hand finish.
        return self.request_timeout_s + 10.0
