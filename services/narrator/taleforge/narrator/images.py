"""Whether a beat gets a picture, and what the picture shows.

The model proposes pictures through the request_illustration tool in the same response;
the scenario's policy (or the live override) decides: never, only when the model says the
scene changed (and on the first turn), or every turn (falling back to the narration's
first sentence when the model did not describe one).
"""

from __future__ import annotations

import hashlib
import re
import uuid

from taleforge.contracts import ImageKind, ImageRequested, TurnRequested
from taleforge.contracts.events import ImagePolicy
from taleforge.narrator.model import ModelReply
from taleforge.narrator.story import SessionState

MAX_IMAGE_SUBJECT_CHARS = 300


def image_seed(turn_id: uuid.UUID) -> int:
    return int.from_bytes(hashlib.sha256(turn_id.bytes).digest()[:4], "big")


def image_prompt(narration: str, style: str) -> str:
    """A short visual description: the narration's first sentence plus a style."""
    first = re.split(r"(?<=[.!?])\s", narration.strip(), maxsplit=1)[0]
    subject = first[:MAX_IMAGE_SUBJECT_CHARS].rstrip(" .!?") or "a quiet moment in the story"
    return f"{subject}, {style}"


def characters_in(text: str, state: SessionState) -> list[str]:
    """The scenario's characters a text mentions (by the last word of their name)."""
    people = list(state.scenario.characters)
    if state.scenario.player_character is not None:
        people.insert(0, state.scenario.player_character)
    words = set(re.findall(r"[a-z']+", text.lower()))
    return [c.name for c in people if c.name.split()[-1].lower() in words]


def plan_image(
    turn: TurnRequested,
    state: SessionState,
    reply: ModelReply,
    policy: ImagePolicy,
    style: str,
) -> ImageRequested | None:
    """The picture for this beat, or None. `state` is the session before this turn."""
    proposed = reply.illustration
    if policy is ImagePolicy.NEVER:
        return None
    first_turn = state.turn_count == 0
    if policy is ImagePolicy.ON_SCENE_CHANGE and proposed is None and not first_turn:
        return None
    if proposed is not None:
        subject = proposed.prompt[:MAX_IMAGE_SUBJECT_CHARS].rstrip(" .!?")
        prompt, kind = f"{subject}, {style}", ImageKind(proposed.kind)
        characters = proposed.characters or characters_in(proposed.prompt, state)
    else:
        prompt, kind = image_prompt(reply.text, style), ImageKind.SCENE
        characters = characters_in(reply.text, state)
    return ImageRequested(
        event_id=uuid.uuid5(turn.turn_id, ImageRequested.TYPE),
        session_id=turn.session_id,
        user_id=turn.user_id,
        turn_id=turn.turn_id,
        image_id=uuid.uuid5(turn.turn_id, f"image:{kind.value}"),
        kind=kind,
        prompt=prompt,
        characters=characters,
        seed=image_seed(turn.turn_id),
    )
