"""Character likeness: each character of a session keeps one look across pictures.

A character's identity is a seed pinned from the session and the character's name, and a
descriptive prefix fixed the first time the character is drawn (from the scenario's
character description in the session's `session.started` event, else the bare name). It
may also get a reference image: the first portrait drawn of the character alone, handed to
workflows with a `%reference_image%` placeholder. Identities live in the NATS KV bucket
`illustrator-identities`, keyed by session and character, so every illustrator process and
every restart sees the same ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from taleforge.contracts.events import CharacterLikeness
from taleforge.illustrator.adapters.buckets import open_key_value

log = logging.getLogger(__name__)

IDENTITY_BUCKET = "illustrator-identities"
MAX_SEED = 2**32 - 1

# Looks up a character's description for a session ("" when unknown).
DescribeCharacter = Callable[[uuid.UUID, str], Awaitable[str]]


def normalise(name: str) -> str:
    return " ".join(name.split()).casefold()


def pinned_seed(session_id: uuid.UUID, name: str) -> int:
    """The same seed for the same character of the same session, in any process."""
    digest = hashlib.sha256(f"{session_id}:{normalise(name)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % MAX_SEED


def identity_key(session_id: uuid.UUID, name: str) -> str:
    # KV keys allow [-/_=.a-zA-Z0-9]: hash the name, which may be any text.
    return f"{session_id}.{hashlib.sha256(normalise(name).encode()).hexdigest()[:24]}"


def prefix_for(name: str, description: str) -> str:
    description = " ".join(description.split())
    return f"{name}, {description}" if description else name


@dataclass(frozen=True)
class Identity:
    session_id: str
    name: str
    seed: int
    prefix: str
    reference_image: str | None = None  # object name in the image store

    def likeness(self) -> CharacterLikeness:
        return CharacterLikeness(
            name=self.name, seed=self.seed, prefix=self.prefix, reference_image=self.reference_image
        )


async def _no_description(session_id: uuid.UUID, name: str) -> str:
    return ""


class IdentityBook:
    def __init__(self, kv: KeyValue, describe: DescribeCharacter = _no_description) -> None:
        self._kv = kv
        self._describe = describe

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        describe: DescribeCharacter = _no_description,
        bucket: str = IDENTITY_BUCKET,
    ) -> IdentityBook:
        config = KeyValueConfig(
            bucket=bucket,
            description="Taleforge character identities (key = session.character)",
            storage=StorageType.FILE,
        )
        return cls(await open_key_value(js, config), describe)

    async def _read(self, key: str) -> tuple[Identity, int] | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return Identity(**json.loads(entry.value or b"{}")), int(entry.revision or 0)

    async def identity_for(self, session_id: uuid.UUID, name: str) -> Identity:
        """The character's identity, created (once, whoever races) on first sight."""
        key = identity_key(session_id, name)
        found = await self._read(key)
        if found is not None:
            return found[0]
        description = await self._describe(session_id, name)
        identity = Identity(
            str(session_id), name, pinned_seed(session_id, name), prefix_for(name, description)
        )
        try:
            await self._kv.create(key, json.dumps(asdict(identity)).encode())
            log.info("new identity for %r in session %s (seed %d)", name, session_id, identity.seed)
            return identity
        except KeyWrongLastSequenceError:
            again = await self._read(key)  # another illustrator created it first: theirs wins
            assert again is not None
            return again[0]

    async def set_reference(self, identity: Identity, object_name: str) -> Identity:
        """Give a character its reference image, unless someone already did."""
        key = identity_key(uuid.UUID(identity.session_id), identity.name)
        found = await self._read(key)
        if found is None or found[0].reference_image:
            return found[0] if found else identity
        updated = replace(found[0], reference_image=object_name)
        try:
            await self._kv.update(key, json.dumps(asdict(updated)).encode(), last=found[1])
        except KeyWrongLastSequenceError:
            return identity
        log.info(
            "reference image for %r in session %s: %s",
            identity.name,
            identity.session_id,
            object_name,
        )
        return updated
