"""Players driving sessions through the API, one turn at a time, across API replicas.

A player asks for a turn with `POST /api/story/progress` as Server-Sent Events and follows
it to its last event (`turn.completed` or `turn.failed`, pictures included). Whatever
breaks on the way, it carries on as a browser would:
- the POST fails before any event (a replica killed, NATS or Postgres away: connection
  errors and 5xx): sent again, same `Idempotency-Key`, to the next replica, so a turn the
  API published before it failed is the same turn, not a second one;
- the stream breaks after some events: resumed with `Last-Event-ID` on the next replica
  (`GET /api/turns/{id}/events`), which must repeat nothing.
A turn counts as *accepted* once an event stream for it has begun (the API answers only
after JetStream stored the turn). What the player saw is kept for the audit: how many
`narration.completed` and final events, repeated event ids, and the narration put together
from the deltas (a retried attempt `reset`s it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from taleforge.cli.tokens import mint_token

SPEECH = [
    "Who goes there?",
    "I mean you no harm, Warden.",
    "Where has the ferryman gone?",
    "How much for a lantern?",
    "Tell me about the drowned chapel.",
    "I promise to return before dawn.",
]
ACTIONS = [
    "I light the lantern and raise it high.",
    "I wade into the shallows.",
    "I search the ferryman's hut.",
    "I follow the reed path north.",
    "I ring the chapel bell.",
    "I count the coins in my purse.",
]

# Answers a player simply tries again: the stack is (deliberately) in trouble.
RETRY_STATUSES = {429, 500, 502, 503, 504}
FINAL_EVENTS = ("turn.completed", "turn.failed")


@dataclass
class AcceptedTurn:
    turn_id: str
    session_id: str
    text: str
    accepted_at: float
    outcome: str | None = None  # "completed" | "failed", as the player saw it
    narration: str | None = None
    code: str | None = None
    finished_at: float | None = None
    completions_seen: int = 0  # narration.completed events received (want 1)
    finals_seen: int = 0  # turn.completed / turn.failed received (want 1)
    repeated_ids: int = 0  # events received twice on resumed streams (want 0)
    deltas: str = ""  # the narration as the deltas told it
    resumes: int = 0


@dataclass
class Traffic:
    """What every player did, for the report."""

    accepted: list[AcceptedTurn] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)  # why requests were sent again
    stuck: list[str] = field(default_factory=list)  # turns a player gave up waiting on
    in_flight: Counter[str] = field(default_factory=Counter)  # open requests per API URL

    def accepted_before(self, moment: float) -> list[AcceptedTurn]:
        return [t for t in self.accepted if t.accepted_at <= moment]


class Replicas:
    """Round-robin over the API replicas; a failed request moves on to the next one."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._next = itertools.cycle(range(len(urls)))

    def pick(self) -> str:
        return self.urls[next(self._next)]


class RetryLater(Exception):
    """This attempt failed in a way a player just tries again."""


async def sse_frames(response: httpx.Response) -> Any:
    """(id, event, data) for each event of an SSE response (comments skipped)."""
    event_id, event, data = None, "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event_id, event, data = None, "message", []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


class Player:
    def __init__(
        self,
        index: int,
        http: httpx.AsyncClient,
        replicas: Replicas,
        traffic: Traffic,
        rng: random.Random,
        *,
        poison_phrase: str,
        poison_turns: set[int],
        turn_timeout_s: float,
    ) -> None:
        self.index = index
        self.user_id = uuid.uuid4()
        self.headers = {"Authorization": f"Bearer {mint_token(self.user_id, ttl_s=6 * 3600)}"}
        self.http = http
        self.replicas = replicas
        self.traffic = traffic
        self.rng = rng
        self.poison_phrase = poison_phrase
        self.poison_turns = poison_turns  # this player's turn numbers that carry the phrase
        self.turn_timeout_s = turn_timeout_s
        self.session_id: str | None = None
        self.turns_played = 0

    def _retry(self, why: str) -> RetryLater:
        self.traffic.retries[why] += 1
        return RetryLater(why)

    async def start_session(self) -> None:
        delay = 0.05
        while True:
            url = self.replicas.pick()
            try:
                response = await self.http.post(
                    f"{url}/api/sessions", json={}, headers=self.headers
                )
                if response.status_code == 201:
                    self.session_id = response.json()["session_id"]
                    return
                if response.status_code not in RETRY_STATUSES:
                    raise AssertionError(f"POST /api/sessions: {response.text}")
                self._retry(f"session HTTP {response.status_code}")
            except httpx.TransportError as exc:
                self._retry(f"session {type(exc).__name__}")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    def _next_input(self) -> tuple[str, str]:
        if self.turns_played in self.poison_turns:
            return "action", f"I read the {self.poison_phrase} carved on the post."
        if self.rng.random() < 0.5:
            return "speech", self.rng.choice(SPEECH)
        return "action", self.rng.choice(ACTIONS)

    async def play_turn(self) -> AcceptedTurn | None:
        assert self.session_id is not None
        input_type, text = self._next_input()
        key = str(uuid.UUID(int=self.rng.getrandbits(128)))
        body = {"session_id": self.session_id, "input_type": input_type, "text": text}
        self.turns_played += 1
        turn: AcceptedTurn | None = None
        last_id: str | None = None
        seen: set[str] = set()
        deadline = time.monotonic() + self.turn_timeout_s
        delay = 0.05
        while time.monotonic() < deadline:
            url = self.replicas.pick()
            self.traffic.in_flight[url] += 1
            try:
                if turn is None or last_id is None:
                    # Nothing seen yet: ask again (the same key names the same turn) and
                    # follow it from its start.
                    seen.clear()
                    request = self.http.stream(
                        "POST",
                        f"{url}/api/story/progress",
                        json=body,
                        headers=self.headers
                        | {"Accept": "text/event-stream", "Idempotency-Key": key},
                    )
                else:
                    turn.resumes += 1
                    request = self.http.stream(
                        "GET",
                        f"{url}/api/turns/{turn.turn_id}/events",
                        headers=self.headers
                        | {"Accept": "text/event-stream", "Last-Event-ID": last_id},
                    )
                async with request as response:
                    turn = await self._accepted(response, turn, text)
                    async for event_id, event, data in sse_frames(response):
                        if event_id is not None:
                            if event_id in seen:
                                turn.repeated_ids += 1
                            seen.add(event_id)
                            last_id = event_id
                        self._saw(turn, event, json.loads(data))
                        if event in FINAL_EVENTS:
                            return turn
                raise self._retry("stream ended early")
            except RetryLater:
                pass
            except (httpx.TransportError, httpx.StreamError) as exc:
                self._retry(type(exc).__name__)
            finally:
                self.traffic.in_flight[url] -= 1
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)
        if turn is not None:
            self.traffic.stuck.append(turn.turn_id)
        return None

    async def _accepted(
        self, response: httpx.Response, turn: AcceptedTurn | None, text: str
    ) -> AcceptedTurn:
        status = response.status_code
        if status in RETRY_STATUSES:
            raise self._retry(f"HTTP {status}")
        if status != 200:  # a 409 or 204 here would be the API's bug
            body = (await response.aread()).decode(errors="replace")
            raise AssertionError(f"HTTP {status} from {response.request.url}: {body}")
        if turn is None:
            turn_id = response.headers["content-location"].rsplit("/", 1)[-1]
            turn = AcceptedTurn(turn_id, str(self.session_id), text, time.monotonic())
            self.traffic.accepted.append(turn)
        return turn

    @staticmethod
    def _saw(turn: AcceptedTurn, event: str, data: dict[str, Any]) -> None:
        if event == "narration.delta":
            turn.deltas = ("" if data.get("reset") else turn.deltas) + data["text"]
        elif event == "narration.completed":
            turn.completions_seen += 1
            turn.narration = data["text"]
        elif event in FINAL_EVENTS:
            turn.finals_seen += 1
            turn.outcome = data["status"]
            turn.code = data.get("code")
            turn.finished_at = time.monotonic()

    async def play(self, stop: asyncio.Event) -> None:
        await self.start_session()
        while not stop.is_set():
            if await self.play_turn() is None:
                return  # stuck: the audit reports it; a next turn would only pile up
