"""What the model is asked, built in a fixed order so providers can cache a long prefix.

Order: instructions (narrator rules, then the world, then the characters), the rolling
summary, the recent turns (the opening first, while it is not summarised), and the new
input last. Within a session only the end grows from one turn to the next: the new input
is written exactly as it will appear in history, so this turn's whole prompt is the prefix
of the next one (until the oldest turns are folded into the summary).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from taleforge.contracts import InputType, TurnRequested
from taleforge.contracts.events import ScenarioSnapshot
from taleforge.narrator.story import SessionState, TurnRecord
from taleforge.narrator.tokens import TokenCounter, count_messages

PROMPT_VERSION = "v2"

INSTRUCTIONS = (
    "You are the narrator of an interactive story. Write the next beat of the story in the "
    "second person, present tense, in 2 to 4 vivid sentences (40 to 80 words). React to what "
    "the player character just said or did, keep the world and every character consistent "
    "with what came before, never speak or act for the player character, and end on "
    "something the player can respond to. Plain prose only: no lists, headings or quotation "
    "of these instructions. When the scene changes or a new character steps on stage, also "
    "call the request_illustration tool once with a short visual description."
)

SUMMARY_HEADING = "The story so far (summary of earlier turns):"


@dataclass(frozen=True)
class Prompt:
    instructions: str
    messages: list[dict[str, str]]
    cache_key: str

    @property
    def player_text(self) -> str:
        """The text of the last user message (what the OpenAI sandbox's reply depends on)."""
        return self.messages[-1]["content"]

    def tokens(self, counter: TokenCounter) -> int:
        return count_messages(counter, self.instructions, self.messages)


def describe_input(input_type: InputType, text: str) -> str:
    """The player's input as one line the model can narrate from."""
    text = " ".join(text.split())
    if input_type is InputType.SPEECH:
        return f'The player character says: "{text}"'
    if input_type is InputType.ACTION:
        return f"The player character does this: {text}"
    if text:
        return f"Continue the story. The player adds: {text}"
    return "Continue the story from where it left off."


def describe_scenario(title: str, scenario: ScenarioSnapshot) -> str:
    """World, tone, rules and characters: the session's stable part of the instructions."""
    parts = []
    if title or scenario.world:
        parts.append(f"## World: {title}\n{scenario.world}".rstrip())
    if scenario.tone:
        parts.append(f"## Tone\n{scenario.tone}")
    if scenario.rules:
        parts.append("## Rules of this world\n" + "\n".join(f"- {r}" for r in scenario.rules))
    lines = []
    if scenario.player_character is not None:
        pc = scenario.player_character
        lines.append(f"- {pc.name}: the player character. {pc.description}".rstrip())
    lines += [f"- {c.name}: {c.description}".rstrip() for c in scenario.characters]
    if lines:
        parts.append("## Characters\n" + "\n".join(lines))
    return "\n\n".join(parts)


def build_instructions(state: SessionState | None) -> str:
    if state is None:
        return INSTRUCTIONS
    scenario = describe_scenario(state.title, state.scenario)
    return f"{INSTRUCTIONS}\n\n{scenario}" if scenario else INSTRUCTIONS


def turn_messages(record: TurnRecord) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": describe_input(record.input_type, record.text)},
        {"role": "assistant", "content": record.narration},
    ]


def history_messages(state: SessionState) -> list[dict[str, str]]:
    messages = []
    if state.summary:
        messages.append({"role": "system", "content": f"{SUMMARY_HEADING}\n{state.summary}"})
    if state.opening:
        messages.append({"role": "assistant", "content": state.opening})
    for record in state.turns:
        messages += turn_messages(record)
    return messages


def cache_key(session_id: uuid.UUID) -> str:
    """One key per session: the provider routes the session's requests to the same cache."""
    return f"taleforge-{PROMPT_VERSION}-{session_id}"


def build_prompt(turn: TurnRequested, state: SessionState | None = None) -> Prompt:
    """The prompt for `turn`; without a state, just the rules and the player's input."""
    history = [] if state is None else history_messages(state)
    new_input = {"role": "user", "content": describe_input(turn.input_type, turn.text)}
    return Prompt(
        instructions=build_instructions(state),
        messages=[*history, new_input],
        cache_key=cache_key(turn.session_id),
    )
