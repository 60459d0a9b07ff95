"""Memory: when the history outgrows the budget, fold the oldest turns into a summary.

Folding takes the history down to `keep_fraction` of what the budget leaves for it, so a
fold happens every several turns rather than every turn: between folds each prompt is a
prefix of the next, and the provider's prompt cache keeps hitting.
"""

from __future__ import annotations

from dataclasses import dataclass

from taleforge.contracts import TurnRequested
from taleforge.narrator.prompting import build_prompt, describe_input
from taleforge.narrator.story import SessionState, TurnRecord
from taleforge.narrator.tokens import MESSAGE_OVERHEAD_TOKENS, TokenCounter

SUMMARY_INSTRUCTIONS = (
    "You keep the memory of an interactive story. Merge the summary so far with the new "
    "events into one updated summary in the past tense, at most 200 words: who the "
    "characters are, what they want, what happened, promises made, places visited and "
    "anything unresolved. Facts only, no commentary."
)


@dataclass(frozen=True)
class FoldPlan:
    turns: int  # how many of the oldest recent turns to fold
    prompt_tokens: int


def _turn_tokens(counter: TokenCounter, record: TurnRecord) -> int:
    user = describe_input(record.input_type, record.text)
    return counter.count(user) + counter.count(record.narration) + 2 * MESSAGE_OVERHEAD_TOKENS


def plan_fold(
    state: SessionState,
    turn: TurnRequested,
    counter: TokenCounter,
    *,
    budget_tokens: int,
    summary_tokens: int,
    keep_fraction: float,
) -> FoldPlan:
    """How many of the oldest turns must go into the summary for the prompt to fit."""
    total = build_prompt(turn, state).tokens(counter)
    if total <= budget_tokens or not state.turns:
        return FoldPlan(0, total)
    sizes = [_turn_tokens(counter, r) for r in state.turns]
    opening = counter.count(state.opening) if state.opening else 0
    fixed = total - sum(sizes) - opening - (counter.count(state.summary) if state.summary else 0)
    room = max(0, budget_tokens - fixed - summary_tokens)
    target = room * keep_fraction
    remaining, folded = float(sum(sizes)), 0
    while folded < len(sizes) and remaining > target:
        remaining -= sizes[folded]
        folded += 1
    return FoldPlan(folded, total)


def summary_request(state: SessionState, folded: int) -> str:
    """The summariser's input: the summary so far and the turns being folded into it."""
    lines = [f"Summary so far:\n{state.summary or '(nothing yet)'}", "", "New events:"]
    if state.opening:
        lines.append(f"Opening: {state.opening}")
    for record in state.turns[:folded]:
        lines.append(f"Turn {record.number}. {describe_input(record.input_type, record.text)}")
        lines.append(f"Narrator: {record.narration}")
    return "\n".join(lines)
