"""The OpenAI sandbox's knobs for the fault suite and the load run: a reject phrase (a
permanent failure tied to one input), time to first token, and cheap counters."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from taleforge.sandboxes.openai import FaultConfig, OpenAISandboxConfig, create_app
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration

PHRASE = "[[forbidden rune]]"
FIRST_TOKEN_DELAY_MS = 300


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    config = OpenAISandboxConfig(
        first_token_delay_ms=FIRST_TOKEN_DELAY_MS, faults=FaultConfig(reject_phrase=PHRASE)
    )
    with serve_in_thread(create_app(config)) as url:
        yield url


def client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=3)


async def test_reject_phrase_fails_that_input_for_good_on_both_apis(sandbox: str) -> None:
    before = httpx.get(f"{sandbox}/_sandbox/stats").json()
    llm = client(sandbox)
    poisoned = f"I read the {PHRASE} aloud"
    with pytest.raises(openai.BadRequestError) as responses_error:
        await llm.responses.create(model="m", input=[{"role": "user", "content": poisoned}])
    assert responses_error.value.code == "content_policy_violation"
    with pytest.raises(openai.BadRequestError):
        await llm.chat.completions.create(
            model="m", messages=[{"role": "user", "content": poisoned}]
        )
    # Other inputs are answered; a 400 is not retried by the SDK: one call each.
    reply = await llm.responses.create(model="m", input=[{"role": "user", "content": "I wait"}])
    assert reply.output_text
    after = httpx.get(f"{sandbox}/_sandbox/stats").json()
    assert after["requests"] - before["requests"] == 3
    assert after["calls"] - before["calls"] == 3


async def test_first_token_waits_the_configured_delay(sandbox: str) -> None:
    started = time.monotonic()
    stream = await client(sandbox).responses.create(
        model="m", input=[{"role": "user", "content": "I look around"}], stream=True
    )
    first_delta_after = None
    async for event in stream:
        if event.type == "response.output_text.delta" and first_delta_after is None:
            first_delta_after = time.monotonic() - started
    assert first_delta_after is not None
    # A lower bound only: a loaded machine may be slower, never faster.
    assert first_delta_after >= FIRST_TOKEN_DELAY_MS / 1000
    assert httpx.get(f"{sandbox}/_sandbox/stats").json()["streamed_calls"] >= 1
