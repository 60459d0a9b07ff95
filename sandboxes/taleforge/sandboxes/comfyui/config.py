"""Settings of the ComfyUI sandbox, including the faults a test can switch on at run time."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CHECKPOINTS = [
    "sandbox-v1.safetensors",
    "v1-5-pruned-emaonly.safetensors",
    "sd_xl_base_1.0.safetensors",
]


class SandboxFaults(BaseModel):
    """Failures to inject. Counters are used up one prompt at a time."""

    model_config = ConfigDict(extra="forbid")

    fail_next: int = Field(default=0, ge=0, description="Next N prompts fail at the KSampler.")
    fail_message: str = "CUDA out of memory. Tried to allocate 2.00 GiB (sandbox fault)"
    hang_next: int = Field(
        default=0, ge=0, description="Next N prompts stall at the KSampler until interrupted."
    )
    drop_socket_next: int = Field(
        default=0, ge=0, description="Next N prompts close their client's websocket mid-run."
    )
    drop_after_progress: int = Field(
        default=2, ge=0, description="Progress frames sent before the socket is dropped."
    )


class ComfyUISandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    render_ms: int = Field(default=200, ge=0, description="Total simulated time of one prompt.")
    checkpoints: list[str] = Field(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
    preview_frames: bool = Field(default=True, description="Send binary JPEG previews.")
    max_history: int = Field(default=10_000, ge=1)
    faults: SandboxFaults = Field(default_factory=SandboxFaults)
