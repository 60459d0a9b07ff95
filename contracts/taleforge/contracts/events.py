"""Every event of the story log and of the live channel.

Events are named for what happened. Stream events are kept in JetStream (the source of
truth, replayable); live events go over core NATS and are not kept.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from taleforge.contracts.envelope import Envelope

MAX_INPUT_CHARS = 4000


class InputType(StrEnum):
    SPEECH = "speech"  # the player character says it
    ACTION = "action"  # the player character does it
    CONTINUE = "continue"  # narrate on with no input


class ImageKind(StrEnum):
    SCENE = "scene"
    PORTRAIT = "portrait"


class ImagePolicy(StrEnum):
    """When a scenario's story gets pictures."""

    NEVER = "never"
    ON_SCENE_CHANGE = "on_scene_change"  # when the narrator says the scene changed
    EVERY_TURN = "every_turn"


class Character(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)


class CharacterLikeness(BaseModel):
    """A character's pinned look in one session: same seed and prefix in every picture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    seed: int = Field(ge=0)
    prefix: str = Field(max_length=4200, description="Descriptive text put before the prompt.")
    reference_image: str | None = Field(
        default=None, description="Object name of the reference image given to the workflow."
    )


class ScenarioSnapshot(BaseModel):
    """What a story is set in, copied into `SessionStarted` so a replay needs nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    world: str = Field(default="", max_length=20_000)
    tone: str = Field(default="", max_length=2000)
    rules: list[str] = Field(default_factory=list, max_length=50)
    player_character: Character | None = None
    characters: list[Character] = Field(
        default_factory=list, max_length=50, description="Non-player characters."
    )
    image_policy: ImagePolicy = ImagePolicy.EVERY_TURN


class NarrationSettings(BaseModel):
    """The narrator settings a turn was narrated with (they can change at run time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api: str = "responses"
    model: str
    temperature: float | None = None
    max_output_tokens: int | None = None
    context_budget_tokens: int | None = None
    image_policy: ImagePolicy | None = None


class PromptRecord(BaseModel):
    """What a narration's prompt was built from, so it can be rebuilt byte-for-byte.

    Not a copy of the prompt (that would grow the log by the whole context every turn):
    the scenario comes from `SessionStarted`, the summary from the last `MemoryFolded`, the
    recent turns from their `TurnRequested` and `NarrationCompleted`. `sha256` proves a
    rebuild equal to what was sent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(description="The narrator's prompt format version, e.g. v2.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Of the prompt as canonical JSON: {instructions, messages}, UTF-8.",
    )
    summarized_through: NonNegativeInt = Field(
        default=0, description="The summary in the prompt covered turns 1..N (0: no summary)."
    )
    opening: bool = Field(default=False, description="The scenario's opening was in the history.")
    # A count and the first, not every id: the history is a run of consecutive turns, and
    # forty ids would double the size of each narration event.
    turns: NonNegativeInt = Field(default=0, description="Recent turns in the history.")
    first_turn_id: UUID | None = Field(default=None, description="The oldest of them.")
    tokens: NonNegativeInt | None = Field(default=None, description="Estimated prompt tokens.")


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: NonNegativeInt = 0
    cached_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    reasoning_tokens: NonNegativeInt = 0
    total_tokens: NonNegativeInt = 0


class SessionStarted(Envelope):
    """A player started a story session from a scenario."""

    TYPE = "session.started"
    type: Literal["session.started"] = "session.started"
    schema_version: Literal[1] = 1
    scenario_id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=200)
    opening: str = Field(default="", max_length=20_000, description="The scenario's opening beat.")
    scenario: ScenarioSnapshot | None = Field(
        default=None, description="The scenario as it was when the session started."
    )


class TurnRequested(Envelope):
    """The player asked for the next beat of the story."""

    TYPE = "turn.requested"
    type: Literal["turn.requested"] = "turn.requested"
    schema_version: Literal[1] = 1
    turn_id: UUID
    input_type: InputType
    text: str = Field(default="", max_length=MAX_INPUT_CHARS)


class NarrationStarted(Envelope):
    """The narrator took the turn and is calling the model."""

    TYPE = "narration.started"
    type: Literal["narration.started"] = "narration.started"
    schema_version: Literal[1] = 1
    turn_id: UUID
    model: str
    attempt: int = Field(default=1, ge=1, description="JetStream delivery attempt.")


class IllustrationProposal(BaseModel):
    """The picture the model asked for with the narration (its request_illustration call)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(max_length=4000)
    kind: ImageKind = ImageKind.SCENE
    characters: list[str] = Field(default_factory=list, max_length=20)


class NarrationCompleted(Envelope):
    """The narrator finished the beat; `text` is the whole narration."""

    TYPE = "narration.completed"
    type: Literal["narration.completed"] = "narration.completed"
    schema_version: Literal[1] = 1
    turn_id: UUID
    text: str
    model: str
    usage: TokenUsage = Field(default_factory=TokenUsage)
    response_id: str | None = None
    time_to_first_token_ms: float | None = Field(default=None, ge=0)
    duration_ms: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(
        default=None, ge=0, description="From the narrator's price table; None if unpriced."
    )
    settings: NarrationSettings | None = None
    prompt: PromptRecord | None = Field(
        default=None, description="How to rebuild the exact prompt (taleforge show-prompt)."
    )
    image_ids: list[UUID] | None = Field(
        default=None,
        description="The images this beat asked for (their ImageRequested follow); None: not "
        "recorded (older narrators).",
    )
    illustration: IllustrationProposal | None = Field(
        default=None,
        description="The model's own picture request, so a lost ImageRequested can be rebuilt.",
    )


class TurnFailed(Envelope):
    """The turn ended without narration; `reason` is readable by the player."""

    TYPE = "turn.failed"
    type: Literal["turn.failed"] = "turn.failed"
    schema_version: Literal[1] = 1
    turn_id: UUID
    code: str = Field(description="Machine-readable cause, e.g. provider_auth, max_deliveries.")
    reason: str
    request_seq: int | None = Field(
        default=None, ge=1, description="Stream sequence of the turn.requested that kept failing."
    )


class MemoryFolded(Envelope):
    """The narrator folded the oldest recent turns into the rolling summary, to make room
    for the prompt of `turn_id`. Later prompts use `summary` until the next fold."""

    TYPE = "memory.folded"
    type: Literal["memory.folded"] = "memory.folded"
    schema_version: Literal[1] = 1
    turn_id: UUID
    summary: str
    summarized_through: NonNegativeInt = Field(description="The summary covers turns 1..N.")
    folded_turns: NonNegativeInt = Field(description="Recent turns that went into it now.")
    model: str
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float | None = Field(default=None, ge=0)


class ImageRequested(Envelope):
    """A beat of the story calls for a picture."""

    TYPE = "image.requested"
    type: Literal["image.requested"] = "image.requested"
    schema_version: Literal[1] = 1
    turn_id: UUID
    image_id: UUID
    kind: ImageKind = ImageKind.SCENE
    prompt: str = Field(min_length=1, max_length=4000)
    characters: list[str] = Field(
        default_factory=list, max_length=20, description="Characters present in the picture."
    )
    negative_prompt: str = Field(default="", max_length=4000)
    seed: int | None = Field(default=None, ge=0)
    width: int = Field(default=512, ge=64, le=4096)
    height: int = Field(default=512, ge=64, le=4096)


class ImageCompleted(Envelope):
    """The image is rendered and its bytes are in object storage."""

    TYPE = "image.completed"
    type: Literal["image.completed"] = "image.completed"
    schema_version: Literal[1] = 1
    turn_id: UUID
    image_id: UUID
    bucket: str
    object_name: str
    content_type: str = "image/png"
    size_bytes: NonNegativeInt
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    seed: int | None = None
    template: str | None = Field(default=None, description="Workflow template (image kind).")
    template_version: int | None = Field(
        default=None, ge=0, description="0 = as shipped; else the template bucket's revision."
    )
    characters: list[CharacterLikeness] = Field(
        default_factory=list, description="The visual identity each character was drawn with."
    )


class ImageFailed(Envelope):
    """The image could not be made; the turn's narration is unaffected."""

    TYPE = "image.failed"
    type: Literal["image.failed"] = "image.failed"
    schema_version: Literal[1] = 1
    turn_id: UUID
    image_id: UUID
    code: str
    reason: str
    request_seq: int | None = Field(
        default=None, ge=1, description="Stream sequence of the image.requested that kept failing."
    )


class DeliveryExhausted(Envelope):
    """JetStream gave up delivering a stream message to a consumer (its MAX_DELIVERIES
    advisory, translated by persistence). The consumer's owner fails the request for the
    player unless it already has an outcome. Envelope ids are the original request's."""

    TYPE = "delivery.exhausted"
    type: Literal["delivery.exhausted"] = "delivery.exhausted"
    schema_version: Literal[1] = 1
    consumer: str = Field(min_length=1, description="The durable consumer that gave up.")
    request_seq: int = Field(ge=1, description="Stream sequence of the message it gave up on.")
    request_type: str = Field(description="That message's type, e.g. turn.requested.")
    deliveries: NonNegativeInt = Field(description="Deliveries the server made.")
    image_id: UUID | None = Field(default=None, description="Set when it is an image request.")


# Sessions, saves, scenarios and settings are events too, so a replay rebuilds all of it.


class SessionRenamed(Envelope):
    """The player gave the session a new title."""

    TYPE = "session.renamed"
    type: Literal["session.renamed"] = "session.renamed"
    schema_version: Literal[1] = 1
    title: str = Field(min_length=1, max_length=200)


class SessionDeleted(Envelope):
    """The player deleted the session: it, its turns, images and saves leave the read model,
    and later events about it are ignored."""

    TYPE = "session.deleted"
    type: Literal["session.deleted"] = "session.deleted"
    schema_version: Literal[1] = 1


class SaveCreated(Envelope):
    """The player saved the story as it stands at `turn_id` (None: before the first turn)."""

    TYPE = "save.created"
    type: Literal["save.created"] = "save.created"
    schema_version: Literal[1] = 1
    save_id: UUID
    title: str = Field(min_length=1, max_length=200)


class SaveDeleted(Envelope):
    TYPE = "save.deleted"
    type: Literal["save.deleted"] = "save.deleted"
    schema_version: Literal[1] = 1
    save_id: UUID


class SessionRestored(Envelope):
    """The player loaded a save: the story line is again the one ending at the save's turn
    `turn_id` (None: the opening); turns after it are no longer part of the story and the
    next turn continues from there."""

    TYPE = "session.restored"
    type: Literal["session.restored"] = "session.restored"
    schema_version: Literal[1] = 1
    save_id: UUID


# The nil UUID: admin events belong to no session. Their subject is story.events.admin.<type>.
NO_SESSION = UUID(int=0)
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"


class AdminEvent(Envelope):
    """An operator's change (catalogue, settings, dead letters); `user_id` is the admin."""

    session_id: UUID = Field(default=NO_SESSION, description="Always the nil UUID.")

    def subject(self) -> str:
        from taleforge.contracts.subjects import admin_subject

        subject: str = admin_subject(self.type)
        return subject


class ScenarioUpserted(AdminEvent):
    """A scenario was created or replaced (the whole scenario, so replay needs no other)."""

    TYPE = "scenario.upserted"
    type: Literal["scenario.upserted"] = "scenario.upserted"
    schema_version: Literal[1] = 1
    scenario_id: str = Field(pattern=SLUG_PATTERN, description="The slug sessions name it by.")
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(default="", max_length=2000)
    opening: str = Field(default="", max_length=20_000)
    scenario: ScenarioSnapshot = Field(default_factory=ScenarioSnapshot)
    published: bool = True


class ScenarioDeleted(AdminEvent):
    TYPE = "scenario.deleted"
    type: Literal["scenario.deleted"] = "scenario.deleted"
    schema_version: Literal[1] = 1
    scenario_id: str = Field(pattern=SLUG_PATTERN)


class SettingsChanged(AdminEvent):
    """Live settings of a service were changed (already in effect when this is published)."""

    TYPE = "settings.changed"
    type: Literal["settings.changed"] = "settings.changed"
    schema_version: Literal[1] = 1
    service: Literal["narrator", "illustrator"]
    changes: dict[str, str | None] = Field(
        description="Key -> new value as stored in the service's KV bucket; None: removed "
        "(back to the default)."
    )
    revision: int | None = Field(default=None, ge=0, description="KV revision after the change.")


class DeadLetterRetried(AdminEvent):
    """An operator re-published a dead-lettered stream message for another try."""

    TYPE = "dead_letter.retried"
    type: Literal["dead_letter.retried"] = "dead_letter.retried"
    schema_version: Literal[1] = 1
    stream_seq: int = Field(ge=1, description="The dead letter's stream sequence.")
    retried_as_seq: int = Field(ge=1, description="Stream sequence of the re-published copy.")


class NarrationDelta(Envelope):
    """A piece of narration as the model writes it (live channel only, not kept)."""

    TYPE = "narration.delta"
    type: Literal["narration.delta"] = "narration.delta"
    schema_version: Literal[1] = 1
    turn_id: UUID
    index: NonNegativeInt = Field(description="0-based position of this delta in the attempt.")
    delta: str
    attempt: int = Field(
        default=1,
        ge=1,
        description="The narrator's attempt; a retried turn restarts at index 0 with a higher one.",
    )


STREAM_EVENTS: tuple[type[Envelope], ...] = (
    SessionStarted,
    TurnRequested,
    NarrationStarted,
    NarrationCompleted,
    TurnFailed,
    MemoryFolded,
    ImageRequested,
    ImageCompleted,
    ImageFailed,
    DeliveryExhausted,
    SessionRenamed,
    SessionDeleted,
    SaveCreated,
    SaveDeleted,
    SessionRestored,
    ScenarioUpserted,
    ScenarioDeleted,
    SettingsChanged,
    DeadLetterRetried,
)
LIVE_EVENTS: tuple[type[Envelope], ...] = (NarrationDelta,)
ALL_EVENTS: tuple[type[Envelope], ...] = STREAM_EVENTS + LIVE_EVENTS

StoryEvent = Annotated[
    SessionStarted
    | TurnRequested
    | NarrationStarted
    | NarrationCompleted
    | TurnFailed
    | MemoryFolded
    | ImageRequested
    | ImageCompleted
    | ImageFailed
    | DeliveryExhausted
    | SessionRenamed
    | SessionDeleted
    | SaveCreated
    | SaveDeleted
    | SessionRestored
    | ScenarioUpserted
    | ScenarioDeleted
    | SettingsChanged
    | DeadLetterRetried,
    Field(discriminator="type"),
]
LiveEvent = NarrationDelta
