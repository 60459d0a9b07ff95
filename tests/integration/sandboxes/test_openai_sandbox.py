"""The OpenAI sandbox driven by the official SDK (never a mock of it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from taleforge.sandboxes.openai import (
    FaultConfig,
    OpenAISandboxConfig,
    create_app,
    deterministic_reply,
    stream_tokens,
)
from taleforge.sandboxes.serving import serve_in_thread

pytestmark = pytest.mark.integration

INSTRUCTIONS = "You are the narrator of a gothic tale."
PROMPT = "I knock three times on the chapel door"
EXPECTED = deterministic_reply(PROMPT)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with serve_in_thread(create_app(OpenAISandboxConfig(require_api_key=True))) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[str]:
    """The shared sandbox with faults cleared and no recorded requests."""
    httpx.put(f"{sandbox_url}/_sandbox/faults", json={}).raise_for_status()
    httpx.delete(f"{sandbox_url}/_sandbox/requests").raise_for_status()
    yield sandbox_url


def set_faults(url: str, **faults: object) -> None:
    httpx.put(f"{url}/_sandbox/faults", json=faults).raise_for_status()


def recorded(url: str) -> list[dict[str, object]]:
    requests: list[dict[str, object]] = httpx.get(f"{url}/_sandbox/requests").json()
    return requests


def client(url: str, **kwargs: object) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-test", **kwargs)  # type: ignore[arg-type]


async def test_non_streaming_response(sandbox: str) -> None:
    response = await client(sandbox).responses.create(
        model="gpt-4.1-mini",
        instructions=INSTRUCTIONS,
        input=[{"role": "user", "content": PROMPT}],
        temperature=0.7,
        max_output_tokens=300,
        prompt_cache_key="session-1",
        metadata={"turn": "1"},
    )
    assert response.id.startswith("resp_")
    assert response.status == "completed" and response.model == "gpt-4.1-mini"
    assert response.output_text == EXPECTED
    assert response.usage is not None
    assert response.usage.output_tokens == len(stream_tokens(EXPECTED))
    words = len(INSTRUCTIONS.split()) + len(PROMPT.split())
    assert response.usage.input_tokens == words
    assert response.usage.total_tokens == words + response.usage.output_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    body = recorded(sandbox)[0]
    assert body["path"] == "/v1/responses"
    assert body["body"]["prompt_cache_key"] == "session-1"  # type: ignore[index]


async def test_streaming_response_event_sequence(sandbox: str) -> None:
    types, deltas, sequence = [], [], []
    stream = await client(sandbox).responses.create(
        model="gpt-4.1-mini", instructions=INSTRUCTIONS, input=PROMPT, stream=True
    )
    async for event in stream:
        types.append(event.type)
        sequence.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    n = len(stream_tokens(EXPECTED))
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert sequence == list(range(len(types)))
    assert "".join(deltas) == EXPECTED
    assert completed.output_text == EXPECTED
    assert completed.usage is not None and completed.usage.output_tokens == n


async def test_stream_helper_and_cached_prefix(sandbox: str) -> None:
    api = client(sandbox)
    async with api.responses.stream(model="m", instructions=INSTRUCTIONS, input=PROMPT) as stream:
        final = await stream.get_final_response()
    assert final.output_text == EXPECTED
    again = await api.responses.create(model="m", instructions=INSTRUCTIONS, input=PROMPT)
    assert again.usage is not None
    assert again.usage.input_tokens_details.cached_tokens == len(INSTRUCTIONS.split())


async def test_chat_completions(sandbox: str) -> None:
    api = client(sandbox)
    messages = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": PROMPT},
    ]
    plain = await api.chat.completions.create(model="gpt-4.1-mini", messages=messages)  # type: ignore[arg-type]
    assert plain.choices[0].message.content == EXPECTED
    stream = await api.chat.completions.create(
        model="gpt-4.1-mini",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == EXPECTED
    assert usage is not None and usage.completion_tokens == len(stream_tokens(EXPECTED))


async def test_models_list(sandbox: str) -> None:
    models = await client(sandbox).models.list()
    assert "gpt-4.1-mini" in [m.id for m in models.data]


async def test_rate_limit_then_success_with_sdk_retry(sandbox: str) -> None:
    set_faults(sandbox, rate_limit_first_n=2, retry_after_s=0.01)
    response = await client(sandbox, max_retries=2).responses.create(model="m", input=PROMPT)
    assert response.output_text == EXPECTED
    assert len(recorded(sandbox)) == 3
    set_faults(sandbox, rate_limit_first_n=1, retry_after_s=0.01)
    with pytest.raises(openai.RateLimitError) as caught:
        await client(sandbox, max_retries=0).responses.create(model="m", input=PROMPT)
    assert caught.value.response.headers["retry-after-ms"] == "10"
    assert caught.value.code == "rate_limit_exceeded"


async def test_server_error_then_success(sandbox: str) -> None:
    set_faults(sandbox, server_error_next_n=1)
    with pytest.raises(openai.InternalServerError):
        await client(sandbox, max_retries=0).responses.create(model="m", input=PROMPT)
    response = await client(sandbox, max_retries=0).responses.create(model="m", input=PROMPT)
    assert response.output_text == EXPECTED


async def test_insufficient_quota(sandbox: str) -> None:
    set_faults(sandbox, insufficient_quota=True)
    with pytest.raises(openai.RateLimitError) as caught:
        await client(sandbox, max_retries=0).responses.create(model="m", input=PROMPT)
    assert caught.value.code == "insufficient_quota"


async def test_auth_failure_and_missing_key(sandbox: str) -> None:
    set_faults(sandbox, auth_failure=True)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client(sandbox).responses.create(model="m", input=PROMPT)
    assert caught.value.code == "invalid_api_key"
    assert len(recorded(sandbox)) == 1  # 401 is not retried by the SDK
    set_faults(sandbox)
    reply = httpx.post(f"{sandbox}/v1/responses", json={"model": "m", "input": "x"})
    assert reply.status_code == 401
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


async def test_stall_is_detected_by_client_timeout(sandbox: str) -> None:
    set_faults(sandbox, stall_after_deltas=3)
    # The read timeout must outlast a busy machine's first bytes, yet end well inside 5 s.
    api = client(sandbox, max_retries=0, timeout=httpx.Timeout(2.0, connect=2.0))
    deltas = []
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        stream = await api.responses.create(model="m", input=PROMPT, stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert len(deltas) == 3
    assert time.monotonic() - started < 5


async def test_timed_stall_resumes(sandbox: str) -> None:
    set_faults(sandbox, stall_after_deltas=2, stall_s=0.2, stream_fault_calls=1)
    stream = await client(sandbox).responses.create(model="m", input=PROMPT, stream=True)
    started = time.monotonic()
    text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
    assert text == EXPECTED and time.monotonic() - started >= 0.2


async def test_dropped_connection_mid_stream(sandbox: str) -> None:
    set_faults(sandbox, drop_after_deltas=4, stream_fault_calls=1)
    deltas = []
    with pytest.raises(openai.APIConnectionError) as caught:
        stream = await client(sandbox, max_retries=0).responses.create(
            model="m", input=PROMPT, stream=True
        )
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert len(deltas) == 4
    # Only the first streamed call was faulty.
    stream = await client(sandbox).responses.create(model="m", input=PROMPT, stream=True)
    assert "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])


async def test_fault_settings_round_trip(sandbox: str) -> None:
    set_faults(sandbox, rate_limit_first_n=3, drop_after_deltas=1)
    faults = FaultConfig.model_validate(httpx.get(f"{sandbox}/_sandbox/faults").json())
    assert faults.rate_limit_first_n == 3 and faults.drop_after_deltas == 1
    bad = httpx.put(f"{sandbox}/_sandbox/faults", json={"no_such_knob": 1})
    assert bad.status_code == 422
