"""The sandbox's "model": a deterministic story beat derived from the prompt.

Tests import `deterministic_reply` to predict exactly what a narration will say. The same
prompt always gives the same text; different prompts pick different words, chosen by the
sha256 of the prompt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

ECHO_WORDS = 12

_SETTINGS = (
    "Under a bruised violet sky",
    "In the hush before the rain",
    "Beneath the creaking lanterns of the old quay",
    "Deep in the fern-choked ruins",
    "Across the frost-bitten square",
    "Inside the smoke-stained tavern",
)
_OMENS = (
    "a raven lands on the broken well and watches without blinking",
    "the candles gutter as if something unseen has drawn a breath",
    "a distant bell tolls once, then falls strangely silent",
    "the wind carries the scent of iron and wet stone",
    "a lantern swings though no hand has touched it",
    "footsteps echo somewhere above, slow and deliberate",
)
_REACTIONS = (
    "The stranger by the hearth lifts her head and smiles thinly.",
    "An old sentry mutters a prayer and steps aside.",
    "Somewhere a door unlatches, answering as if it had been waiting.",
    "The shadows along the wall lean closer, listening.",
    "A child in a grey cloak darts away toward the harbour.",
    "The innkeeper sets down his cup and will not meet your eyes.",
)
_HOOKS = (
    "Whatever happens next, the night has taken notice.",
    "A narrow path opens to the north, lit by a single torch.",
    "You sense the story tightening around you like a drawn bowstring.",
    "Far off, a horn answers, and the ground trembles faintly.",
    "A folded note lies at your feet, sealed with black wax.",
    "The moon slips free of the clouds and shows the way ahead.",
)


def _pick(options: Sequence[str], digest: bytes, position: int) -> str:
    return options[digest[position] % len(options)]


def echo_of(prompt_text: str) -> str:
    """The player's words as the reply quotes them: at most ECHO_WORDS words, no quotes."""
    words = prompt_text.replace('"', "'").split()
    echo = " ".join(words[:ECHO_WORDS])
    return echo + ("…" if len(words) > ECHO_WORDS else "")


def deterministic_reply(prompt_text: str) -> str:
    """A four-sentence story beat (about 40-80 words) that quotes the prompt.

    Single spaces only, so splitting on " " gives the streamed tokens exactly.
    """
    digest = hashlib.sha256(prompt_text.encode()).digest()
    echo = echo_of(prompt_text) or "silence"
    sentences = [
        f"{_pick(_SETTINGS, digest, 0)}, {_pick(_OMENS, digest, 1)}.",
        f'Your words still hang in the air: "{echo}".',
        _pick(_REACTIONS, digest, 2),
        _pick(_HOOKS, digest, 3),
    ]
    return " ".join(sentences)


def stream_tokens(text: str) -> list[str]:
    """Whitespace-separated words, each with its trailing space; they join back to `text`."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def count_words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


_CHARACTER_LINE = re.compile(r"^- ([^:\n]{1,80}):", re.MULTILINE)


def wants_picture(prompt_text: str) -> bool:
    """Whether the reply to this prompt also asks for a picture (when a tool is offered)."""
    return hashlib.sha256(prompt_text.encode()).digest()[4] % 2 == 0


def illustration_arguments(instructions: str, prompt_text: str, reply: str) -> dict[str, Any]:
    """A picture request for the reply: its first sentence, and the characters the player named.

    Characters are the `- Name: ...` lines of the instructions whose name's first word the
    prompt mentions.
    """
    first = re.split(r"(?<=[.!?])\s", reply.strip(), maxsplit=1)[0].rstrip(" .!?")
    lowered = prompt_text.lower()
    names = [n.strip() for n in _CHARACTER_LINE.findall(instructions)]
    present = [n for n in names if n.split()[-1].lower() in lowered]
    return {"prompt": first, "characters": present, "kind": "portrait" if present else "scene"}
