"""What the sandbox remembers at run time: requests seen, fault settings and counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from taleforge.sandboxes.openai.config import FaultConfig, OpenAISandboxConfig


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape, which the SDK turns into its typed exceptions."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class SandboxState:
    config: OpenAISandboxConfig
    faults: FaultConfig = field(init=False)
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    streamed_calls: int = 0
    seen_instructions: set[str] = field(default_factory=set)
    # Per prompt_cache_key, the words of the last prompt: what a provider's prefix cache holds.
    cached_prompts: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.faults = self.config.faults.model_copy()

    def replace_faults(self, faults: FaultConfig) -> None:
        self.faults = faults
        self.calls = 0
        self.streamed_calls = 0

    def record(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """Keep the request; the returned entry gets `first_delta_at` when a stream starts."""
        entry = {"method": method, "path": path, "time": time.time(), "body": body}
        self.requests.append(entry)
        return entry

    def cached_prefix(self, cache_key: str, words: list[str]) -> int:
        """A stand-in for prefix caching: words shared with the key's previous prompt."""
        previous = self.cached_prompts.get(cache_key, [])
        self.cached_prompts[cache_key] = words
        shared = 0
        for old, new in zip(previous, words, strict=False):
            if old != new:
                break
            shared += 1
        return shared

    def cached_tokens(self, instructions: str, instruction_words: int) -> int:
        """A stand-in for prompt caching: a repeated instructions prefix counts as cached."""
        if not instructions:
            return 0
        if instructions in self.seen_instructions:
            return instruction_words
        self.seen_instructions.add(instructions)
        return 0

    def call_fault(self, authorization: str | None, prompt_text: str = "") -> JSONResponse | None:
        """The error this model call must get, if any; counts the call.

        `prompt_text` is the call's last user message, which `reject_phrase` is looked for in.
        """
        if self.config.require_api_key and not (authorization or "").startswith("Bearer "):
            return error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                type_="invalid_request_error",
                code=None,
            )
        self.calls += 1
        faults = self.faults
        if faults.auth_failure:
            return error_response(
                401,
                "Incorrect API key provided: sk-*****. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        if faults.insufficient_quota:
            return error_response(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type_="insufficient_quota",
                code="insufficient_quota",
            )
        if faults.reject_phrase and faults.reject_phrase in prompt_text:
            return error_response(
                400,
                "Your request was rejected as a result of our safety system (sandbox: the "
                "input contains the reject phrase).",
                type_="invalid_request_error",
                code="content_policy_violation",
            )
        if self.calls <= faults.rate_limit_first_n:
            wait = faults.retry_after_s
            headers = {
                "retry-after-ms": str(round(wait * 1000)),
                "retry-after": str(max(1, round(wait + 0.499))),
            }
            return error_response(
                429,
                f"Rate limit reached (sandbox). Please try again in {wait:g}s.",
                type_="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if self.calls <= faults.rate_limit_first_n + faults.server_error_next_n:
            return error_response(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
                code=None,
            )
        return None

    def stats(self) -> dict[str, int]:
        """Counters a test can poll cheaply (the recorded requests can be large)."""
        return {
            "requests": len(self.requests),
            "calls": self.calls,
            "streamed_calls": self.streamed_calls,
        }

    def stream_fault(self) -> FaultConfig:
        """The faults this streamed call gets (none past `stream_fault_calls`); counts it."""
        self.streamed_calls += 1
        limit = self.faults.stream_fault_calls
        if limit is not None and self.streamed_calls > limit:
            return FaultConfig()
        return self.faults
