"""MAX_DELIVERIES advisory + original message → the `delivery.exhausted` persistence publishes."""

from __future__ import annotations

import json
import uuid

from taleforge.contracts import (
    DeliveryExhausted,
    ImageRequested,
    InputType,
    ScenarioDeleted,
    TurnRequested,
)
from taleforge.persistence.adapters.advisories import exhausted_event, exhausted_event_id


def advisory(consumer: str, seq: int, deliveries: int) -> bytes:
    return json.dumps(
        {
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": "STORY",
            "consumer": consumer,
            "stream_seq": seq,
            "deliveries": deliveries,
        }
    ).encode()


def test_an_exhausted_turn_and_image_keep_their_ids_and_get_a_deterministic_event_id() -> None:
    ids = {"session_id": uuid.uuid4(), "user_id": uuid.uuid4(), "turn_id": uuid.uuid4()}
    turn = TurnRequested(**ids, input_type=InputType.ACTION, text="Ring the bell.")
    event = exhausted_event(advisory("narrator", 7, 5), turn.to_bytes(), 7)
    assert isinstance(event, DeliveryExhausted)
    assert (event.session_id, event.user_id, event.turn_id) == tuple(ids.values())
    assert (event.consumer, event.request_seq, event.request_type, event.deliveries) == (
        "narrator",
        7,
        "turn.requested",
        5,
    )
    assert event.image_id is None
    assert event.subject() == f"story.events.{ids['session_id']}.delivery.exhausted"
    again = exhausted_event(advisory("narrator", 7, 5), turn.to_bytes(), 7)
    assert again is not None and again.event_id == event.event_id == exhausted_event_id(
        7, "narrator"
    )
    assert exhausted_event_id(7, "illustrator") != event.event_id

    image = ImageRequested(**ids, image_id=uuid.uuid4(), prompt="a bell")
    pictured = exhausted_event(advisory("illustrator", 9, 3), image.to_bytes(), 9)
    assert pictured is not None and pictured.image_id == image.image_id
    assert pictured.request_type == "image.requested"


def test_nothing_to_fail_for_malformed_or_admin_messages() -> None:
    assert exhausted_event(advisory("narrator", 3, 5), b"{not json", 3) is None
    admin = ScenarioDeleted(user_id=uuid.uuid4(), scenario_id="fog")
    assert exhausted_event(advisory("persistence", 4, 1000), admin.to_bytes(), 4) is None
