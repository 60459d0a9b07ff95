"""Projections of admin events: the scenario catalogue, settings history, dead-letter retries.

Scenario rows get an id derived from the slug, so a rebuild reproduces them exactly.
"""

from __future__ import annotations

import json
import logging
from uuid import NAMESPACE_URL, UUID, uuid5

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.contracts import (
    DeadLetterRetried,
    ScenarioDeleted,
    ScenarioUpserted,
    SettingsChanged,
)

log = logging.getLogger(__name__)


def scenario_row_id(slug: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"taleforge:scenario:{slug}")


_UPSERT_SCENARIO = text(
    """
    INSERT INTO scenarios (id, slug, title, summary, opening, snapshot, published, created_at,
                           updated_at)
    VALUES (:id, :slug, :title, :summary, :opening, CAST(:snapshot AS jsonb), :published, :at,
            :at)
    ON CONFLICT (slug) DO UPDATE SET
        title = excluded.title,
        summary = excluded.summary,
        opening = excluded.opening,
        snapshot = excluded.snapshot,
        published = excluded.published,
        updated_at = excluded.updated_at
    """
)


async def upsert_scenario(conn: AsyncConnection, event: ScenarioUpserted) -> None:
    await conn.execute(
        _UPSERT_SCENARIO,
        {
            "id": scenario_row_id(event.scenario_id),
            "slug": event.scenario_id,
            "title": event.title,
            "summary": event.summary,
            "opening": event.opening,
            "snapshot": event.scenario.model_dump_json(),
            "published": event.published,
            "at": event.occurred_at,
        },
    )


async def delete_scenario(conn: AsyncConnection, event: ScenarioDeleted) -> None:
    await conn.execute(
        text("DELETE FROM scenarios WHERE slug = :slug"), {"slug": event.scenario_id}
    )


async def record_settings_change(conn: AsyncConnection, event: SettingsChanged) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO settings_changes (event_id, service, changes, revision, changed_by,
                                          changed_at)
            VALUES (:event_id, :service, CAST(:changes AS jsonb), :revision, :user_id, :at)
            ON CONFLICT (event_id) DO NOTHING
            """
        ),
        {
            "event_id": event.event_id,
            "service": event.service,
            "changes": json.dumps(event.changes),
            "revision": event.revision,
            "user_id": event.user_id,
            "at": event.occurred_at,
        },
    )


async def record_dead_letter_retry(conn: AsyncConnection, event: DeadLetterRetried) -> None:
    retried = await conn.scalar(
        text(
            """
            UPDATE dead_letters
               SET retry_count = retry_count + 1, last_retried_at = :at,
                   retried_as_seq = :retried_as_seq
             WHERE stream_seq = :stream_seq
            RETURNING id
            """
        ),
        {
            "stream_seq": event.stream_seq,
            "retried_as_seq": event.retried_as_seq,
            "at": event.occurred_at,
        },
    )
    if retried is None:
        # A rebuild where the message applied fine this time: nothing to mark.
        log.info("no dead letter at seq %s; retry only recorded", event.stream_seq)
