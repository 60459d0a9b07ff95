"""Dead letters for requests that kept failing: an operator lists them next to our own.

A `turn.failed` or `image.failed` whose code says the request was tried until its delivery
budget ran out (the narrator's and the illustrator's retries exhausted, or JetStream's
MAX_DELIVERIES advisory turned into a failure) leaves a `dead_letters` row at the stream
sequence of the request (`request_seq`), so `POST /admin/dead-letters/{seq}/retry` can
republish it. Part of the projection: once per event, and a rebuild makes the same rows.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taleforge.contracts import (
    DeliveryExhausted,
    ImageFailed,
    ImageRequested,
    TurnFailed,
    TurnRequested,
    event_subject,
)
from taleforge.persistence.models import Base, DeadLetter

dead_letters = Base.metadata.tables[DeadLetter.__tablename__]

# The codes that mean "kept failing" (a permanent failure such as provider_auth is not).
# narrator: provider_unavailable (its retries exhausted); both: max_deliveries.
DEAD_LETTER_CODES = frozenset({"max_deliveries", "provider_unavailable"})


async def record_failed_request(conn: AsyncConnection, event: TurnFailed | ImageFailed) -> None:
    if event.code not in DEAD_LETTER_CODES:
        return
    request_type = TurnRequested.TYPE if isinstance(event, TurnFailed) else ImageRequested.TYPE
    statement = insert(dead_letters).values(
        stream_seq=event.request_seq,
        subject=event_subject(event.session_id, request_type),
        payload=event.model_dump_json(),
        reason=f"{event.type} {event.code}: {event.reason}",
        delivery_count=None,
        first_seen_at=event.occurred_at,
        last_seen_at=event.occurred_at,
    )
    # The projection may have dead-lettered the request itself already: keep that record.
    await conn.execute(statement.on_conflict_do_nothing(index_elements=[dead_letters.c.stream_seq]))


async def note_exhausted(conn: AsyncConnection, event: DeliveryExhausted) -> None:
    """No row: the owning service answers a `delivery.exhausted` with its turn.failed /
    image.failed max_deliveries (dead-lettered above), or with nothing when the request has
    an outcome. One failure, one row; a rebuild makes the same."""
