"""What the model is asked: stable instructions plus the player's input for this turn.

The instructions never change between turns, so providers can cache them as a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from taleforge.contracts import InputType, TurnRequested

PROMPT_VERSION = "v1"

INSTRUCTIONS = (
    "You are the narrator of an interactive story. Write the next beat of the story in the "
    "second person, present tense, in 2 to 4 vivid sentences (40 to 80 words). React to what "
    "the player character just said or did, keep the world consistent, never speak or act "
    "for the player character, and end on something the player can respond to. Plain prose "
    "only: no lists, headings or quotation of these instructions."
)


@dataclass(frozen=True)
class Prompt:
    instructions: str
    messages: list[dict[str, str]]
    cache_key: str

    @property
    def player_text(self) -> str:
        """The text of the last user message (what the OpenAI sandbox's reply depends on)."""
        return self.messages[-1]["content"]


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


def build_prompt(turn: TurnRequested) -> Prompt:
    return Prompt(
        instructions=INSTRUCTIONS,
        messages=[{"role": "user", "content": describe_input(turn.input_type, turn.text)}],
        cache_key=f"taleforge-narrator-{PROMPT_VERSION}",
    )
