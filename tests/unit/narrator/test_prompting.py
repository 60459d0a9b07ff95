"""Prompt building for each kind of player input."""

from __future__ import annotations

import uuid

from taleforge.contracts import InputType, TurnRequested
from taleforge.narrator.prompting import INSTRUCTIONS, build_prompt


def turn(input_type: InputType, text: str) -> TurnRequested:
    ids = {"session_id": uuid.uuid4(), "user_id": uuid.uuid4(), "turn_id": uuid.uuid4()}
    return TurnRequested(input_type=input_type, text=text, **ids)


def test_speech_is_said_by_the_player_character() -> None:
    prompt = build_prompt(turn(InputType.SPEECH, "  Who   goes there? "))
    assert prompt.messages == [
        {"role": "user", "content": 'The player character says: "Who goes there?"'}
    ]


def test_action_is_done_by_the_player_character() -> None:
    prompt = build_prompt(turn(InputType.ACTION, "draws a sword"))
    assert prompt.player_text == "The player character does this: draws a sword"


def test_continue_narrates_on_with_or_without_text() -> None:
    assert "Continue the story" in build_prompt(turn(InputType.CONTINUE, "")).player_text
    assert "rain" in build_prompt(turn(InputType.CONTINUE, "rain falls")).player_text


def test_instructions_and_cache_key_are_stable_across_turns() -> None:
    first = build_prompt(turn(InputType.SPEECH, "a"))
    second = build_prompt(turn(InputType.ACTION, "b"))
    assert first.instructions == second.instructions == INSTRUCTIONS
    assert first.cache_key == second.cache_key
