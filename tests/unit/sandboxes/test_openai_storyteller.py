"""The sandbox's deterministic "model" text."""

from __future__ import annotations

from taleforge.sandboxes.openai import deterministic_reply, last_user_text, stream_tokens


def test_reply_is_deterministic_and_depends_on_the_prompt() -> None:
    assert deterministic_reply("open the gate") == deterministic_reply("open the gate")
    assert deterministic_reply("open the gate") != deterministic_reply("close the gate")


def test_reply_reads_like_a_story_beat_quoting_the_player() -> None:
    for prompt in ["hi", "I draw my sword and step into the dark hall", "x " * 300]:
        reply = deterministic_reply(prompt)
        assert 30 <= len(reply.split()) <= 80
        assert "  " not in reply and "\n" not in reply
    assert '"I draw my sword and step into the dark hall"' in deterministic_reply(
        "I draw my sword and step into the dark hall"
    )


def test_tokens_are_words_with_trailing_spaces_that_join_back() -> None:
    reply = deterministic_reply("look around")
    tokens = stream_tokens(reply)
    assert "".join(tokens) == reply
    assert len(tokens) == len(reply.split())
    assert all(t.endswith(" ") for t in tokens[:-1])


def test_last_user_text_reads_strings_and_message_lists() -> None:
    assert last_user_text("plain") == "plain"
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    assert last_user_text(messages) == "second"
