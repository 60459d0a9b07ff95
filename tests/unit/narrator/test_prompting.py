"""Context assembly: typed inputs, the fixed order, the budget and the rolling summary."""

from __future__ import annotations

import uuid

from taleforge.contracts import InputType, SessionStarted, TurnRequested
from taleforge.contracts.events import Character, ScenarioSnapshot
from taleforge.narrator.memory import plan_fold, summary_request
from taleforge.narrator.prompting import INSTRUCTIONS, SUMMARY_HEADING, build_prompt
from taleforge.narrator.story import SessionState
from taleforge.narrator.tokens import ApproxTokenCounter, make_counter

SESSION = uuid.uuid4()
COUNTER = ApproxTokenCounter()


def turn(input_type: InputType, text: str) -> TurnRequested:
    return TurnRequested(
        session_id=SESSION,
        user_id=uuid.uuid4(),
        turn_id=uuid.uuid4(),
        input_type=input_type,
        text=text,
    )


def a_state(turns: int = 0) -> SessionState:
    started = SessionStarted(
        session_id=SESSION,
        user_id=uuid.uuid4(),
        scenario_id="s",
        title="Greywater",
        opening="Rain on the river.",
        scenario=ScenarioSnapshot(
            world="A fenland.",
            tone="Quiet dread.",
            rules=["No crossing after dark."],
            player_character=Character(name="Wren", description="A tinker."),
            characters=[Character(name="Old Maddock", description="The ferryman.")],
        ),
    )
    state = SessionState.started(started)
    for n in range(turns):
        t = turn(InputType.ACTION, f"I walk to stone {n} " + "slowly " * 20)
        state = state.with_turn(t.turn_id, t.input_type, t.text, f"Beat {n}. " + "Mist. " * 30, n)
    return state


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


def test_order_is_instructions_world_characters_summary_history_input() -> None:
    state = a_state(turns=2).with_summary("Wren met Maddock.", folded=1)
    prompt = build_prompt(turn(InputType.SPEECH, "hello"), state)
    text = prompt.instructions
    assert text.startswith(INSTRUCTIONS)
    positions = [text.index(s) for s in ("## World", "## Tone", "## Rules", "## Characters")]
    assert positions == sorted(positions)
    assert "- Wren: the player character. A tinker." in text and "- Old Maddock:" in text
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert prompt.messages[0]["content"] == f"{SUMMARY_HEADING}\nWren met Maddock."
    assert prompt.messages[-1]["content"] == 'The player character says: "hello"'
    assert prompt.cache_key == build_prompt(turn(InputType.ACTION, "x"), state).cache_key


def test_each_prompt_is_the_prefix_of_the_next() -> None:
    state = a_state(turns=1)
    t = turn(InputType.ACTION, "I knock")
    first = build_prompt(t, state)
    after = state.with_turn(t.turn_id, t.input_type, t.text, "A door opens.", 9)
    second = build_prompt(turn(InputType.SPEECH, "hi"), after)
    assert first.instructions == second.instructions
    assert second.messages[: len(first.messages)] == first.messages


def test_fold_plan_fits_the_budget_with_room_to_grow() -> None:
    state = a_state(turns=10)
    t = turn(InputType.SPEECH, "hello")
    total = build_prompt(t, state).tokens(COUNTER)
    assert (
        plan_fold(
            state, t, COUNTER, budget_tokens=total, summary_tokens=50, keep_fraction=0.5
        ).turns
        == 0
    )
    plan = plan_fold(
        state, t, COUNTER, budget_tokens=total - 10, summary_tokens=50, keep_fraction=0.5
    )
    assert 0 < plan.turns < 10
    folded = state.with_summary("short", plan.turns)
    assert build_prompt(t, folded).tokens(COUNTER) <= total - 10
    assert folded.summarized_through == plan.turns and folded.turns[0].number == plan.turns + 1
    assert folded.opening == ""  # the opening went into the summary


def test_summary_request_holds_the_old_summary_and_only_the_folded_turns() -> None:
    state = a_state(turns=4).with_summary("Earlier things.", folded=2)
    request = summary_request(state, 1)
    assert "Earlier things." in request and "Turn 3." in request and "Turn 4." not in request


def test_token_counter_is_approximate_offline() -> None:
    assert COUNTER.count("Hello there, traveller!") in range(4, 10)
    assert make_counter("tiktoken:no-such-encoding").name == "approx"
