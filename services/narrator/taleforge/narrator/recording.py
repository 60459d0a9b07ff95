"""What the narrator records so any turn's prompt can be rebuilt, byte for byte, later.

Keeping a copy of every prompt would add the whole context (thousands of tokens) to the log
on every turn. Instead the log keeps what the prompt is built from, which it mostly holds
already: the scenario (`SessionStarted`), the players' inputs (`TurnRequested`) and the
narrations (`NarrationCompleted`). The two things only the narrator knew are recorded here:
each rolling summary when it is folded (`MemoryFolded`), and, with each narration, which
summary and recent turns its prompt held plus the sha256 of the prompt (`PromptRecord`), so a
rebuild (`taleforge.narrator.history`) is proven equal to what was sent.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from taleforge.contracts import MemoryFolded, PromptRecord, TurnRequested
from taleforge.narrator.model import ModelReply
from taleforge.narrator.pricing import ModelPrice, cost_usd
from taleforge.narrator.prompting import PROMPT_VERSION, Prompt
from taleforge.narrator.story import SessionState
from taleforge.narrator.tokens import TokenCounter


def prompt_bytes(prompt: Prompt) -> bytes:
    """The prompt as canonical JSON (what the model reads: instructions, then messages)."""
    document = {"instructions": prompt.instructions, "messages": prompt.messages}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def prompt_sha256(prompt: Prompt) -> str:
    return hashlib.sha256(prompt_bytes(prompt)).hexdigest()


def prompt_record(prompt: Prompt, state: SessionState, counter: TokenCounter) -> PromptRecord:
    """What `prompt` was built from: `state` is the session state it was built with."""
    return PromptRecord(
        format=PROMPT_VERSION,
        sha256=prompt_sha256(prompt),
        summarized_through=state.summarized_through if state.summary else 0,
        opening=bool(state.opening),
        turns=len(state.turns),
        first_turn_id=state.turns[0].turn_id if state.turns else None,
        tokens=prompt.tokens(counter),
    )


def fold_event(
    turn: TurnRequested,
    folded: SessionState,
    folded_turns: int,
    reply: ModelReply,
    prices: dict[str, ModelPrice],
) -> MemoryFolded:
    """The fold made to fit `turn`'s prompt, with the summary it produced."""
    return MemoryFolded(
        event_id=uuid.uuid5(turn.turn_id, MemoryFolded.TYPE),
        session_id=turn.session_id,
        user_id=turn.user_id,
        turn_id=turn.turn_id,
        summary=folded.summary,
        summarized_through=folded.summarized_through,
        folded_turns=folded_turns,
        model=reply.model,
        usage=reply.usage,
        cost_usd=cost_usd(prices, reply.model, reply.usage),
    )
