"""What a turn cost, from a per-model price table in USD per million tokens.

Cached input is priced on its own (providers bill it at a discount); reasoning tokens are
already part of the output tokens, as OpenAI reports them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taleforge.contracts import TokenUsage

PER_TOKENS = 1_000_000


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="USD per 1M uncached input tokens.")
    cached_input: float | None = Field(
        default=None, ge=0, description="USD per 1M cached input tokens (None: as input)."
    )
    output: float = Field(ge=0, description="USD per 1M output tokens (reasoning included).")


# List prices (USD per 1M tokens) at the time of writing; override with NARRATOR_PRICES.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4.1": ModelPrice(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": ModelPrice(input=0.10, cached_input=0.025, output=0.40),
    "gpt-4o": ModelPrice(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": ModelPrice(input=0.15, cached_input=0.075, output=0.60),
}


def price_for(prices: dict[str, ModelPrice], model: str) -> ModelPrice | None:
    """The model's price; a dated snapshot (gpt-4.1-mini-2025-04-14) falls back to its base."""
    if model in prices:
        return prices[model]
    candidates = [name for name in prices if model.startswith(f"{name}-")]
    return prices[max(candidates, key=len)] if candidates else None


def cost_usd(prices: dict[str, ModelPrice], model: str, usage: TokenUsage) -> float | None:
    price = price_for(prices, model)
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    total = (
        (usage.input_tokens - cached) * price.input
        + cached * cached_rate
        + usage.output_tokens * price.output
    )
    return round(total / PER_TOKENS, 10)
