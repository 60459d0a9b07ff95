"""Settings of the OpenAI sandbox: pacing, auth and the faults it can inject."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt


class FaultConfig(BaseModel):
    """Faults to inject, replaceable at run time through `PUT /_sandbox/faults`.

    Counters start again whenever the faults are replaced: "the first N calls" means the
    first N model calls (responses or chat completions) after the settings took effect.
    """

    model_config = ConfigDict(extra="forbid")

    rate_limit_first_n: NonNegativeInt = Field(
        default=0, description="Answer the first N calls with 429 rate_limit_exceeded."
    )
    retry_after_s: NonNegativeFloat = Field(
        default=0.05,
        description="Sent with each 429 as retry-after-ms (exact) and retry-after (whole seconds).",
    )
    server_error_next_n: NonNegativeInt = Field(
        default=0, description="After the 429s, answer the next N calls with 500."
    )
    insufficient_quota: bool = Field(
        default=False, description="Answer every call with 429 insufficient_quota (no retry)."
    )
    auth_failure: bool = Field(
        default=False, description="Answer every call with 401 invalid_api_key."
    )
    stall_after_deltas: NonNegativeInt | None = Field(
        default=None, description="Streams stop sending after this many text deltas."
    )
    stall_s: NonNegativeFloat | None = Field(
        default=None, description="How long a stall lasts; None stalls until the client leaves."
    )
    drop_after_deltas: NonNegativeInt | None = Field(
        default=None, description="Streams close the connection abruptly after this many deltas."
    )
    error_event_after_deltas: NonNegativeInt | None = Field(
        default=None, description="Streams send an `error` event after this many deltas and end."
    )
    error_event_shape: Literal["nested", "flat"] = Field(
        default="nested",
        description='nested: {"type":"error","error":{...}}; flat: {"type":"error","code":...}.',
    )
    error_event_code: str = Field(
        default="server_error", description="The code the mid-stream error event carries."
    )
    malformed_after_deltas: NonNegativeInt | None = Field(
        default=None, description="Streams send a `data:` line that is not JSON after N deltas."
    )
    illustrate: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="When a request offers function tools, whether the reply also calls the "
        "first one: always, never, or auto (decided by the prompt's hash, see `wants_picture`).",
    )
    reject_phrase: str | None = Field(
        default=None,
        description="Answer 400 invalid_request_error to every call whose last user message "
        "contains this phrase: a permanent failure tied to one input, however often retried.",
    )
    stream_fault_calls: NonNegativeInt | None = Field(
        default=None,
        description="How many streamed calls the stream faults apply to; None means all of them.",
    )


class OpenAISandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_delay_ms: NonNegativeFloat = Field(default=0, description="Pause before each delta.")
    first_token_delay_ms: NonNegativeFloat = Field(
        default=0, description="Extra pause before a stream's first delta (time to first token)."
    )
    require_api_key: bool = Field(
        default=False, description="Answer 401 when the request has no bearer token."
    )
    models: list[str] = Field(
        default_factory=lambda: ["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini"],
        description="What GET /v1/models lists (any model name is accepted).",
    )
    faults: FaultConfig = Field(default_factory=FaultConfig)
