"""Configuration from the environment. Infrastructure names are unprefixed, tuning is
`PERSISTENCE_*`, and the event log's own limits are `STREAM_*` (this service owns the stream).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/taleforge"

    # Run Alembic to head at start-up (turn off when a deploy step migrates instead).
    persistence_migrate_on_start: bool = True
    persistence_consumer: str = "persistence"
    # Each event is one short transaction; a long ack_wait only delays redelivery after a crash.
    persistence_ack_wait_s: float = 30.0
    # Bounded, but high: transient database outages are retried, with backoff, for ~8 h.
    persistence_max_deliver: int = 1000
    persistence_retry_base_s: float = 0.5
    persistence_retry_max_s: float = 30.0
    # Deliveries an event failing for an unclassified reason gets before it is dead-lettered.
    persistence_unexpected_error_attempts: int = 3
    # Events fetched and applied per transaction (1: one transaction per event). Also the
    # consumer's max_ack_pending, so nothing newer is delivered while a batch is retried.
    persistence_batch_size: int = Field(100, ge=1, le=1000)
    persistence_graceful_timeout_s: float = 30.0
    persistence_log_level: str = "INFO"
    # One JSON object per log line (json), or readable lines (text, `make dev`).
    log_format: Literal["json", "text"] = "json"
    # How long start-up waits for NATS and Postgres to answer before giving up.
    persistence_startup_timeout_s: float = 60.0

    stream_max_age_s: float = 30 * 24 * 3600.0
    stream_max_bytes: int = -1
    stream_duplicate_window_s: float = 120.0
    stream_replicas: int = 1
