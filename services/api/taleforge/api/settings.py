"""Configuration of the API service, read from the environment."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The CLI mints development tokens with this secret; production sets JWT_SECRET.
DEV_JWT_SECRET = "taleforge-dev-secret-not-for-production-0123456789"


def _env(name: str) -> AliasChoices:
    # Accept the environment name and the field name, so tests can write Settings(nats_url=...).
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_env("NATS_URL"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/taleforge",
        validation_alias=_env("DATABASE_URL"),
    )
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), validation_alias=_env("JWT_SECRET"))
    jwt_audience: str = Field("authenticated", validation_alias=_env("API_JWT_AUDIENCE"))
    # Supabase: https://<project>.supabase.co/auth/v1 ; empty: `iss` is not checked.
    jwt_issuer: str = Field("", validation_alias=_env("API_JWT_ISSUER"))
    # Supabase: https://<project>.supabase.co/auth/v1/.well-known/jwks.json ; empty: only HS256.
    jwks_url: str = Field("", validation_alias=_env("API_JWKS_URL"))
    jwks_cache_s: float = Field(300.0, gt=0, validation_alias=_env("API_JWKS_CACHE_S"))
    jwks_refresh_cooldown_s: float = Field(
        30.0, ge=0, validation_alias=_env("API_JWKS_REFRESH_COOLDOWN_S")
    )
    admin_claim: str = Field("app_metadata.role", validation_alias=_env("API_ADMIN_CLAIM"))
    admin_value: str = Field("admin", validation_alias=_env("API_ADMIN_VALUE"))
    host: str = Field("127.0.0.1", validation_alias=_env("API_HOST"))
    port: int = Field(8000, ge=0, le=65535, validation_alias=_env("API_PORT"))
    cors_origins: str = Field(
        "", validation_alias=_env("API_CORS_ORIGINS"), description="Comma-separated origins."
    )
    session_visible_timeout_s: float = Field(
        5.0, ge=0, validation_alias=_env("API_SESSION_VISIBLE_TIMEOUT_S")
    )
    session_poll_interval_s: float = Field(
        0.02, gt=0, validation_alias=_env("API_SESSION_POLL_INTERVAL_S")
    )
    image_max_age_s: int = Field(86400, ge=0, validation_alias=_env("API_IMAGE_MAX_AGE_S"))
    publish_timeout_s: float = Field(5.0, gt=0, validation_alias=_env("API_PUBLISH_TIMEOUT_S"))
    nats_connect_timeout_s: float = Field(
        30.0, gt=0, validation_alias=_env("API_NATS_CONNECT_TIMEOUT_S")
    )
    stream_wait_s: float = Field(30.0, ge=0, validation_alias=_env("API_STREAM_WAIT_S"))
    db_connect_timeout_s: float = Field(
        5.0, gt=0, validation_alias=_env("API_DB_CONNECT_TIMEOUT_S")
    )
    db_pool_size: int = Field(20, ge=1, le=500, validation_alias=_env("API_DB_POOL_SIZE"))
    # The Postgres role the read queries run as, with the player's JWT claims set per
    # transaction, so row-level security applies. The login in DATABASE_URL must be allowed
    # to SET ROLE to it (on Supabase: `authenticated`). Empty: keep the login's own role.
    db_role: str = Field("authenticated", validation_alias=_env("API_DB_ROLE"))
    # The role admin endpoints read as: every row, no writes (migration 0004). Empty: the
    # login's own role.
    admin_db_role: str = Field("taleforge_admin_read", validation_alias=_env("API_ADMIN_DB_ROLE"))
    # The services' live-settings buckets the admin endpoints change (as the services name them).
    narrator_settings_bucket: str = Field(
        "narrator-settings", validation_alias=_env("API_NARRATOR_SETTINGS_BUCKET")
    )
    illustrator_templates_bucket: str = Field(
        "illustrator-templates", validation_alias=_env("API_ILLUSTRATOR_TEMPLATES_BUCKET")
    )
    # Turns: how long a plain POST /api/story/progress waits for the result (then 202), the
    # SSE heartbeat, and the per-session lock's expiry (frees a session whose turn never
    # ended, e.g. its replica died).
    progress_wait_s: float = Field(25.0, ge=0, validation_alias=_env("API_PROGRESS_WAIT_S"))
    sse_heartbeat_s: float = Field(15.0, gt=0, validation_alias=_env("API_SSE_HEARTBEAT_S"))
    turn_lock_ttl_s: float = Field(300.0, gt=0, validation_alias=_env("API_TURN_LOCK_TTL_S"))
    kv_replicas: int = Field(1, ge=1, le=5, validation_alias=_env("API_KV_REPLICAS"))
    # Limits per player: requests per minute (all replicas together), and what a day's turns
    # may use (UTC day, from the usage ledger); 0 turns a limit off.
    rate_limit_per_min: int = Field(120, ge=0, validation_alias=_env("API_RATE_LIMIT_PER_MIN"))
    daily_token_budget: int = Field(
        1_000_000, ge=0, validation_alias=_env("API_DAILY_TOKEN_BUDGET")
    )
    daily_cost_budget_usd: float = Field(
        5.0, ge=0, validation_alias=_env("API_DAILY_COST_BUDGET_USD")
    )
    max_body_bytes: int = Field(65536, ge=1024, validation_alias=_env("API_MAX_BODY_BYTES"))
    log_level: str = Field("INFO", validation_alias=_env("API_LOG_LEVEL"))
    log_format: Literal["json", "text"] = Field("json", validation_alias=_env("LOG_FORMAT"))

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
