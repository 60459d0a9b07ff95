"""Reading the STORY stream for the CLI: what it still keeps, and events in stream order.

Reads go through an ephemeral pull consumer with no acks (created here, deleted when done,
expired by the server if this process dies), fetched in batches: nothing durable is left
behind and no service's consumer is touched. Retention (age, size, count) removes the oldest
events; when a request reaches before what the stream still holds, `AgedOut` says so, with
the limits that removed it, instead of a misleading "no events".
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from taleforge.cli.progress import Progress
from taleforge.contracts import STREAM_NAME, STREAM_SUBJECTS, InvalidEvent, events_filter
from taleforge.contracts import parse_event as parse_story_event
from taleforge.contracts.events import StoryEvent

FETCH_BATCH = 500
FETCH_TIMEOUT_S = 2.0
INACTIVE_S = 60.0  # the server deletes a forgotten reader's consumer after this long


class StreamUnavailable(Exception):
    """NATS or the STORY stream cannot be reached (the CLI exits 1 with the reason)."""


class AgedOut(Exception):
    """What was asked for is (partly) older than what the stream still keeps."""


class NotInStream(Exception):
    """What was asked for is not in the stream (never was, as far as retention can tell)."""


@dataclass(frozen=True)
class Retention:
    """The stream's limits and what it holds now."""

    max_age_s: float  # 0: no age limit
    max_bytes: int  # -1: no size limit
    max_msgs: int  # -1: no count limit
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    first_time: datetime | None  # of the oldest event kept (None: empty)

    @property
    def has_dropped(self) -> bool:
        """Retention has removed events (the oldest kept is not the first ever written)."""
        return self.first_seq > 1

    def limits(self) -> str:
        parts: list[str] = []
        if self.max_age_s:
            parts.append(f"events older than {_duration(self.max_age_s)}")
        if self.max_bytes > 0:
            parts.append(f"the oldest beyond {self.max_bytes / 2**20:.1f} MiB")
        if self.max_msgs > 0:
            parts.append(f"the oldest beyond {self.max_msgs} events")
        removes = " and ".join(parts) if parts else "nothing"
        return f"retention removes {removes} (STREAM_MAX_AGE_S, STREAM_MAX_BYTES)"

    def oldest(self) -> str:
        if self.first_time is None:
            return f"the stream is empty (next seq {self.last_seq + 1})"
        return f"the stream's oldest event is seq {self.first_seq}, from {iso(self.first_time)}"

    def explain(self) -> str:
        return f"{self.limits()}; {self.oldest()}"


@dataclass(frozen=True)
class StreamEvent:
    """One stream message: where it sits, when it was stored, and the event (if valid)."""

    seq: int
    subject: str
    stored_at: datetime
    event: StoryEvent | None
    error: str | None = None

    @property
    def type(self) -> str:
        return self.event.type if self.event is not None else "(invalid)"

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"seq": self.seq, "subject": self.subject}
        row["stored_at"] = self.stored_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if self.event is not None:
            row.update(self.event.model_dump(mode="json"))
        else:
            row.update({"type": "(invalid)", "error": self.error})
        return row


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@contextlib.asynccontextmanager
async def connect(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    try:
        nc = await nats.connect(
            nats_url, connect_timeout=5, max_reconnect_attempts=2, allow_reconnect=True
        )
    except Exception as exc:
        raise StreamUnavailable(f"cannot reach NATS at {nats_url}: {exc}") from exc
    try:
        yield nc, nc.jetstream()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def retention(js: JetStreamContext) -> Retention:
    try:
        info = await js.stream_info(STREAM_NAME)
    except NotFoundError as exc:
        raise StreamUnavailable(
            f"there is no {STREAM_NAME} stream (the persistence service creates it)"
        ) from exc
    state, config = info.state, info.config
    first_time = None
    if state.messages:
        with contextlib.suppress(NotFoundError):
            first_time = (await js.get_msg(STREAM_NAME, seq=state.first_seq)).time
    return Retention(
        max_age_s=float(config.max_age or 0),
        max_bytes=int(config.max_bytes if config.max_bytes is not None else -1),
        max_msgs=int(config.max_msgs if config.max_msgs is not None else -1),
        messages=state.messages,
        bytes=state.bytes,
        first_seq=state.first_seq,
        last_seq=state.last_seq,
        first_time=first_time,
    )


def parse(msg: Any) -> StreamEvent:
    metadata = msg.metadata
    try:
        event: StoryEvent | None = parse_story_event(msg.data)
        error = None
    except InvalidEvent as exc:
        event, error = None, exc.reason
    return StreamEvent(
        seq=metadata.sequence.stream,
        subject=msg.subject,
        stored_at=metadata.timestamp,
        event=event,
        error=error,
    )


class Reader:
    """Stream messages on one subject filter, from a start, in order; `pending` to come."""

    def __init__(
        self,
        js: JetStreamContext,
        subject: str = STREAM_SUBJECTS[0],
        *,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        new_only: bool = False,
    ) -> None:
        self._js = js
        self._subject = subject
        if new_only:
            policy: dict[str, Any] = {"deliver_policy": DeliverPolicy.NEW}
        elif start_seq is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
        elif start_time is not None:
            policy = {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": start_time}
        else:
            policy = {"deliver_policy": DeliverPolicy.ALL}
        self._policy = policy
        self._name: str | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self.pending = 0  # messages matching the filter at the start, still to be read

    async def __aenter__(self) -> Reader:
        info = await self._js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                filter_subject=self._subject,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=INACTIVE_S,
                mem_storage=True,
                **self._policy,
            ),
        )
        self._name = info.name
        self.pending = info.num_pending or 0
        self._sub = await self._js.pull_subscribe_bind(consumer=info.name, stream=STREAM_NAME)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._name is not None:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(STREAM_NAME, self._name)

    async def batch(self, timeout_s: float = FETCH_TIMEOUT_S) -> list[Any]:
        """The next messages (raw), or [] when none came within the timeout."""
        assert self._sub is not None, "use `async with Reader(...)`"
        try:
            return list(await self._sub.fetch(FETCH_BATCH, timeout=timeout_s))
        except TimeoutError:
            return []

    async def backlog(self) -> AsyncIterator[list[Any]]:
        """Batches of what matched when the reader opened (then it stops)."""
        remaining, empty = self.pending, 0
        while remaining > 0:
            raws = await self.batch()
            if not raws:
                empty += 1
                if empty >= 3:  # retention removed them while we read
                    return
                continue
            empty = 0
            remaining = max(0, raws[-1].metadata.num_pending)
            yield raws


async def session_events(js: JetStreamContext, session_id: uuid.UUID) -> list[StreamEvent]:
    """Every kept event of the session, oldest first."""
    rows: list[StreamEvent] = []
    async with Reader(js, events_filter(session_id)) as reader:
        with Progress(total=reader.pending, desc="reading", unit="ev", min_total=20_000) as bar:
            async for raws in reader.backlog():
                rows += [parse(raw) for raw in raws]
                bar.update(len(raws))
    return rows


def check_session_complete(session_id: uuid.UUID, rows: list[StreamEvent], kept: Retention) -> None:
    """Raise NotInStream / AgedOut unless the session is in the stream from its start."""
    if not rows:
        if kept.has_dropped:
            raise AgedOut(
                f"no events for session {session_id} in stream {STREAM_NAME}: it may have "
                f"aged out ({kept.explain()})"
            )
        raise NotInStream(f"no events for session {session_id} in stream {STREAM_NAME}")
    if rows[0].type != "session.started":
        if kept.has_dropped:
            raise AgedOut(
                f"the start of session {session_id} aged out of stream {STREAM_NAME}: its "
                f"events before seq {rows[0].seq} are gone: {kept.explain()}"
            )
        raise NotInStream(
            f"session {session_id} has no session.started event (first kept: seq "
            f"{rows[0].seq}, {rows[0].type})"
        )


async def find_turn_session(js: JetStreamContext, turn_id: uuid.UUID) -> uuid.UUID | None:
    """The session of a turn, from its turn.requested (a scan: pass --session to skip it)."""
    async with Reader(js, events_filter(event_type="turn.requested")) as reader:
        needle = str(turn_id)
        with Progress(
            total=reader.pending, desc="finding the turn", unit="ev", min_total=20_000
        ) as bar:
            async for raws in reader.backlog():
                bar.update(len(raws))
                for raw in raws:
                    if needle.encode() not in raw.data:
                        continue
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        body = json.loads(raw.data)
                        if body.get("turn_id") == needle:
                            return uuid.UUID(body["session_id"])
    return None
