"""`taleforge events --session S`: one session's event log, in stream order."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.contracts import STREAM_NAME, InvalidEvent, events_filter, parse_event


async def read_session(nats_url: str, session_id: str) -> list[dict[str, object]]:
    """Every event of the session, oldest first, as dicts with the stream sequence."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = events_filter(session_id)
        try:
            info = await js.stream_info(STREAM_NAME, subjects_filter=subject)
        except NotFoundError:
            return []
        if not info.state.subjects:
            return []
        # An ordered consumer reads the log without leaving a durable consumer behind.
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        rows: list[dict[str, object]] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except NatsTimeout:
                break
            row: dict[str, object] = {"seq": msg.metadata.sequence.stream, "subject": msg.subject}
            try:
                row.update(parse_event(msg.data).model_dump(mode="json"))
            except InvalidEvent as exc:
                row.update({"type": "(invalid)", "error": exc.reason})
            rows.append(row)
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        return rows
    finally:
        await nc.close()


def format_timeline(rows: list[dict[str, object]]) -> str:
    lines = []
    previous: datetime | None = None
    for row in rows:
        at = datetime.fromisoformat(str(row["occurred_at"])) if "occurred_at" in row else None
        gap = f"+{(at - previous).total_seconds():.3f}s" if at and previous else ""
        previous = at or previous
        when = at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if at else "?"
        turn = str(row.get("turn_id") or "")[:8]
        lines.append(f"{row['seq']:>8}  {when}  {gap:>10}  {row['type']:<20} {turn}")
    return "\n".join(lines)


def run(nats_url: str, session_id: str, as_json: bool) -> int:
    rows = asyncio.run(read_session(nats_url, session_id))
    if not rows:
        print(f"no events for session {session_id} in stream {STREAM_NAME}")
        return 1
    print("\n".join(json.dumps(r) for r in rows) if as_json else format_timeline(rows))
    return 0
