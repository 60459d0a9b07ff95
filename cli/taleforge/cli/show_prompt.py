"""`taleforge show-prompt TURN_ID`: the exact prompt the narrator sent for a turn.

Rebuilt from the session's events with the narrator's own code (`taleforge.narrator.history`
and `prompting`), then checked against the sha256 the narrator recorded with the narration.
The text output is for reading; `--json` is the prompt as the request carried it: for the
Responses API `instructions` and `input`, for Chat Completions `messages` (the instructions
as the first, system, message), with the model settings the turn used.

Exit codes: 0 shown (verified, or nothing recorded to verify against: stderr says which);
1 not found; 3 the session's start aged out of the stream; 4 rebuilt but NOT equal to what
was sent (or recorded in another prompt format): shown, with the reason on stderr.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, TextIO

from taleforge.cli.stream import (
    AgedOut,
    NotInStream,
    StreamUnavailable,
    check_session_complete,
    connect,
    find_turn_session,
    retention,
    session_events,
)
from taleforge.narrator.history import Check, HistoryGap, RebuiltPrompt, session_history
from taleforge.narrator.prompting import cache_key

EXIT_OK, EXIT_NOT_FOUND, EXIT_AGED_OUT, EXIT_UNVERIFIED = 0, 1, 3, 4
RULE = "─" * 24


def warn(message: str) -> None:
    print(f"taleforge show-prompt: {message}", file=sys.stderr, flush=True)


async def rebuild_prompt(
    nats_url: str, turn_id: uuid.UUID, session_id: uuid.UUID | None = None
) -> RebuiltPrompt:
    """The turn's prompt, rebuilt and checked (raises AgedOut, NotInStream, HistoryGap)."""
    async with connect(nats_url) as (_nc, js):
        kept = await retention(js)
        if session_id is None:
            session_id = await find_turn_session(js, turn_id)
            if session_id is None:
                if kept.has_dropped:
                    raise AgedOut(f"turn {turn_id} is not in the stream: {kept.explain()}")
                raise NotInStream(f"turn {turn_id} is not in the stream")
        rows = await session_events(js, session_id)
        check_session_complete(session_id, rows, kept)
    events = [row.event for row in rows if row.event is not None]
    return session_history(session_id, events).prompt(turn_id)


def request_fields(rebuilt: RebuiltPrompt) -> dict[str, Any]:
    """The prompt as the narrator's OpenAI client put it in the request body."""
    view, prompt = rebuilt.view, rebuilt.prompt
    completed = view.completed
    settings = completed.settings if completed is not None else None
    assert view.request is not None
    body: dict[str, Any] = {
        "turn_id": str(view.turn_id),
        "session_id": str(view.request.session_id),
        "api": settings.api if settings else None,
        "model": settings.model if settings else None,
        "temperature": settings.temperature if settings else None,
        "max_output_tokens": settings.max_output_tokens if settings else None,
        "prompt_cache_key": cache_key(view.request.session_id),
        "sha256": rebuilt.sha256,
        "check": rebuilt.check.value,
    }
    if settings is not None and settings.api == "chat":
        body["messages"] = [{"role": "system", "content": prompt.instructions}, *prompt.messages]
    else:
        body["instructions"] = prompt.instructions
        body["input"] = prompt.messages
    return body


def render(rebuilt: RebuiltPrompt) -> str:
    view, prompt = rebuilt.view, rebuilt.prompt
    request, completed = view.request, view.completed
    assert request is not None
    lines = [
        f"turn #{view.number} {view.turn_id} of session {request.session_id}",
        f'player ({request.input_type.value}): "{request.text}"',
    ]
    if completed is not None:
        settings = completed.settings
        used = f"narrated by {completed.model}"
        if settings is not None:
            used += (
                f" ({settings.api} API, temperature {settings.temperature}, "
                f"max {settings.max_output_tokens} output tokens, "
                f"budget {settings.context_budget_tokens})"
            )
        lines.append(used)
        if completed.prompt is not None:
            record = completed.prompt
            summary = (
                f"summary of turns 1..{record.summarized_through}"
                if record.summarized_through
                else "no summary"
            )
            lines.append(
                f"prompt format {record.format}, ~{record.tokens} tokens, {summary}, "
                f"{record.turns} recent turns" + (", opening" if record.opening else "")
            )
    elif view.outcome is not None:
        lines.append(f"turn failed: {view.outcome.type}")
    else:
        lines.append("not narrated (yet): this is the prompt it would get now")
    if view.fold is not None:
        lines.append(
            f"memory folded for this turn: the summary now covers turns "
            f"1..{view.fold.summarized_through}"
        )
    lines.append(rebuilt.explain())
    lines += ["", f"{RULE} instructions {RULE}", prompt.instructions]
    for message in prompt.messages:
        lines += ["", f"{RULE} {message['role']} {RULE}", message["content"]]
    return "\n".join(lines)


def show(rebuilt: RebuiltPrompt, *, as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(json.dumps(request_fields(rebuilt), ensure_ascii=False) + "\n")
    else:
        out.write(render(rebuilt) + "\n")
    if rebuilt.check in (Check.MISMATCH, Check.OTHER_FORMAT):
        warn(rebuilt.explain())
        return EXIT_UNVERIFIED
    if rebuilt.check is Check.UNRECORDED:
        warn(rebuilt.explain())
    return EXIT_OK


def run(args: Any) -> int:
    from taleforge.cli.progress import run_until_interrupted

    try:
        turn_id = uuid.UUID(args.turn_id)
        session_id = uuid.UUID(args.session) if args.session else None
    except ValueError as exc:
        warn(f"bad id: {exc}")
        return 2

    async def work() -> int:
        try:
            rebuilt = await rebuild_prompt(args.nats_url, turn_id, session_id)
        except AgedOut as exc:
            warn(f"{exc}; the prompt cannot be rebuilt without the session's start")
            return EXIT_AGED_OUT
        except (NotInStream, HistoryGap, StreamUnavailable) as exc:
            warn(str(exc))
            return EXIT_NOT_FOUND
        return show(rebuilt, as_json=args.json, out=sys.stdout)

    return run_until_interrupted(work())
