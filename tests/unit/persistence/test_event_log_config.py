"""The STORY stream and the persistence consumer are configured as the bus rules say."""

from __future__ import annotations

import pytest
from nats.js.api import AckPolicy, DeliverPolicy, RetentionPolicy

from taleforge.contracts import STREAM_NAME
from taleforge.persistence.adapters.event_log import (
    persistence_consumer_config,
    story_stream_config,
)
from taleforge.persistence.settings import Settings


def test_stream_keeps_events_with_limits_retention_and_a_duplicate_window() -> None:
    config = story_stream_config(duplicate_window_s=90, max_age_s=3600)
    assert config.name == STREAM_NAME
    assert config.subjects == ["story.events.>"]
    assert config.retention == RetentionPolicy.LIMITS  # replay needs consumed events kept
    assert config.duplicate_window == 90
    assert config.max_age == 3600


def test_consumer_acks_explicitly_one_message_at_a_time() -> None:
    config = persistence_consumer_config(ack_wait_s=20, max_deliver=50)
    assert config.durable_name == "persistence"
    assert config.filter_subject == "story.events.>"
    assert config.ack_policy == AckPolicy.EXPLICIT
    assert config.deliver_policy == DeliverPolicy.ALL
    assert (config.ack_wait, config.max_deliver, config.max_ack_pending) == (20, 50, 1)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.setenv("NATS_URL", "nats://bus:4222")
    mp.setenv("DATABASE_URL", "postgresql+asyncpg://u@db/x")
    mp.setenv("PERSISTENCE_MIGRATE_ON_START", "false")
    mp.setenv("STREAM_DUPLICATE_WINDOW_S", "300")
    settings = Settings()
    assert settings.nats_url == "nats://bus:4222"
    assert settings.database_url == "postgresql+asyncpg://u@db/x"
    assert settings.persistence_migrate_on_start is False
    assert settings.stream_duplicate_window_s == 300
