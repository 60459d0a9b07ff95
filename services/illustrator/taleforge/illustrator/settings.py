"""Illustrator configuration from the environment."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from taleforge.contracts import IMAGE_BUCKET


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ILLUSTRATOR_", extra="ignore", populate_by_name=True
    )

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL"))
    comfyui_url: str = Field("http://127.0.0.1:8188", validation_alias=AliasChoices("COMFYUI_URL"))
    image_bucket: str = Field(IMAGE_BUCKET, validation_alias=AliasChoices("IMAGE_BUCKET"))

    render_timeout_s: float = Field(120.0, gt=0, description="Give up on one render after this.")
    ack_wait_s: float = Field(60.0, gt=0, description="Consumer ack_wait; heartbeats at 1/3.")
    max_deliver: int = Field(5, ge=1, description="Deliveries before ImageFailed.")
    concurrency: int = Field(1, ge=1, description="Renders at once (= max_ack_pending).")
    retry_backoff_s: float = Field(2.0, ge=0, description="First nak delay; doubles, max 60 s.")
    workflow: str = Field("scene", description="Bundled workflow template name.")
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    steps: int = Field(20, ge=1)
    cfg_scale: float = Field(7.0, ge=0)
    sampler: str = "euler"
    negative_prompt: str = "blurry, low quality, watermark, text"
    log_level: str = Field("INFO", description="Python logging level.")

    @property
    def graceful_timeout_s(self) -> float:
        # Longer than the longest render, so a SIGTERM lets it finish.
        return self.render_timeout_s + 15
