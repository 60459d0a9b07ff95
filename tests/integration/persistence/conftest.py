"""Fixtures for the persistence service's tests against a real Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from taleforge.contracts import SessionStarted, TurnRequested
from taleforge.persistence.adapters.repository import Repository, create_engine


@pytest.fixture
async def repo(migrated_database_url: str) -> AsyncIterator[Repository]:
    repository = Repository(create_engine(migrated_database_url))
    try:
        yield repository
    finally:
        await repository.close()


@dataclass
class Story:
    """Ids for one player's session, and makers for its events."""

    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def started(self) -> SessionStarted:
        return SessionStarted(
            session_id=self.session_id,
            user_id=self.user_id,
            scenario_id="lighthouse",
            title="The Lighthouse",
            opening="Fog rolls in.",
        )

    def turn(self, text: str = "I climb the stairs.", **kw: object) -> TurnRequested:
        return TurnRequested(
            session_id=self.session_id,
            user_id=self.user_id,
            turn_id=uuid.uuid4(),
            input_type="action",
            text=text,
            **kw,  # type: ignore[arg-type]
        )

    def ids(self, turn_id: uuid.UUID) -> dict[str, uuid.UUID]:
        return {"session_id": self.session_id, "user_id": self.user_id, "turn_id": turn_id}


@pytest.fixture
def story() -> Story:
    return Story()
