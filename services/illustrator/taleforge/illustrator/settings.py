"""Illustrator configuration from the environment."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taleforge.contracts import IMAGE_BUCKET
from taleforge.illustrator.likeness import IDENTITY_BUCKET
from taleforge.illustrator.templates import TEMPLATE_BUCKET
from taleforge.illustrator.workflows import BUILTIN_PLACEHOLDERS

Scalar = str | int | float | bool


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ILLUSTRATOR_", extra="ignore", populate_by_name=True
    )

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL"))
    comfyui_url: str = Field("http://127.0.0.1:8188", validation_alias=AliasChoices("COMFYUI_URL"))
    comfyui_urls: str = Field(
        "",
        validation_alias=AliasChoices("COMFYUI_URLS"),
        description="Comma-separated ComfyUI servers (the pool); overrides COMFYUI_URL.",
    )
    image_bucket: str = Field(IMAGE_BUCKET, validation_alias=AliasChoices("IMAGE_BUCKET"))
    storage: Literal["nats", "supabase"] = Field("nats", description="Where image bytes go.")
    supabase_url: str = Field("", validation_alias=AliasChoices("SUPABASE_URL"))
    supabase_service_key: str = Field(
        "", validation_alias=AliasChoices("SUPABASE_SERVICE_KEY"), repr=False
    )

    render_timeout_s: float = Field(120.0, gt=0, description="Give up on one render after this.")
    ack_wait_s: float = Field(60.0, gt=0, description="Consumer ack_wait; heartbeats at 1/3.")
    max_deliver: int = Field(5, ge=1, description="Deliveries before ImageFailed.")
    concurrency: int = Field(1, ge=1, description="Renders at once in this process.")
    max_ack_pending: int = Field(
        1000,
        ge=1,
        description="Consumer-wide cap on renders in flight across all illustrator processes.",
    )
    retry_backoff_s: float = Field(2.0, ge=0, description="First nak delay; doubles, max 60 s.")
    health_interval_s: float = Field(2.0, gt=0, description="Probe ComfyUI backends this often.")
    template_bucket: str = TEMPLATE_BUCKET
    identity_bucket: str = IDENTITY_BUCKET
    placeholders: dict[str, Scalar] = Field(
        default_factory=dict,
        description='Operator placeholders, JSON: {"lora": "x.safetensors"} fills "%lora%".',
    )
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    steps: int = Field(20, ge=1)
    cfg_scale: float = Field(7.0, ge=0)
    sampler: str = "euler"
    negative_prompt: str = "blurry, low quality, watermark, text"
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field(
        "json", validation_alias=AliasChoices("LOG_FORMAT"), description="json or text lines."
    )

    @field_validator("placeholders", mode="before")
    @classmethod
    def _placeholders_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("placeholders")
    @classmethod
    def _no_builtin_overrides(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        clash = set(value) & BUILTIN_PLACEHOLDERS
        if clash:
            raise ValueError(f"built-in placeholders cannot be set: {', '.join(sorted(clash))}")
        return value

    @property
    def backend_urls(self) -> list[str]:
        urls = [u.strip() for u in self.comfyui_urls.split(",") if u.strip()]
        return urls or [self.comfyui_url]

    @property
    def allowed_placeholders(self) -> frozenset[str]:
        return BUILTIN_PLACEHOLDERS | frozenset(self.placeholders)

    @property
    def graceful_timeout_s(self) -> float:
        # Longer than the longest render, so a SIGTERM lets it finish.
        return self.render_timeout_s + 15
