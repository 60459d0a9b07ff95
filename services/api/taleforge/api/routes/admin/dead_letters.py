"""Dead letters: stream messages persistence could not apply; list them, retry one.

A retry re-publishes the original stream message (read by its sequence) under a new
`Nats-Msg-Id`, so every consumer of its subject sees it again as a new message, and records
`dead_letter.retried`, which persistence marks on the dead letter. Consumers are idempotent
by event id, so a message another service already handled changes nothing there.
"""

from __future__ import annotations

from typing import Annotated
from uuid import NAMESPACE_URL, uuid5

from fastapi import APIRouter, HTTPException, Path, Query

from taleforge.api.adapters import admin_reads
from taleforge.api.admin_models import DeadLetterPublic, DeadLetterRetryAccepted, DeadLettersPage
from taleforge.api.deps import AdminUser, Bus
from taleforge.api.routes.admin.deps import FORBIDDEN, AdminDb, AdminNatsDep
from taleforge.api.session_models import MAX_OFFSET, PAGE_LIMIT
from taleforge.contracts import DeadLetterRetried

router = APIRouter(prefix="/dead-letters")


@router.get("", response_model=DeadLettersPage, responses=FORBIDDEN)
async def list_dead_letters(
    db: AdminDb,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DeadLettersPage:
    """Newest first."""
    rows = await admin_reads.list_dead_letters(db, limit=limit + 1, offset=offset)
    return DeadLettersPage(
        items=[DeadLetterPublic.model_validate(row, from_attributes=True) for row in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.post(
    "/{stream_seq}/retry",
    status_code=202,
    response_model=DeadLetterRetryAccepted,
    responses={
        **FORBIDDEN,
        404: {"description": "No dead letter at that stream sequence"},
        410: {"description": "The message is no longer in the stream"},
    },
)
async def retry_dead_letter(
    stream_seq: Annotated[int, Path(ge=1, le=2**63 - 1)],
    admin: AdminUser,
    bus: Bus,
    db: AdminDb,
    nats: AdminNatsDep,
) -> DeadLetterRetryAccepted:
    letter = await admin_reads.get_dead_letter(db, stream_seq)
    if letter is None:
        raise HTTPException(404, f"no dead letter at stream sequence {stream_seq}")
    message = await nats.stream_message(stream_seq)
    if message is None:
        raise HTTPException(410, f"stream message {stream_seq} is gone (past the stream's age)")
    # Numbered by the retries already recorded: a double click is one copy (JetStream
    # drops the duplicate msg id, the event id dedupes the record).
    attempt = f"taleforge:dead-letter-retry:{stream_seq}:{letter.retry_count + 1}"
    copy_seq = await nats.republish(message, msg_id=attempt)
    await bus.publish(
        DeadLetterRetried(
            event_id=uuid5(NAMESPACE_URL, attempt),
            user_id=admin.id,
            stream_seq=stream_seq,
            retried_as_seq=copy_seq,
        )
    )
    return DeadLetterRetryAccepted(stream_seq=stream_seq, retried_as_seq=copy_seq)
