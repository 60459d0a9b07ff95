"""Composition root: broker, consumer, model adapter and narrator wired together."""

from __future__ import annotations

from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage

from taleforge.contracts import STREAM_NAME
from taleforge.narrator.adapters.bus import BrokerBus
from taleforge.narrator.adapters.consumer import (
    TURN_REQUESTED_FILTER,
    consumer_config,
    prepare_jetstream,
)
from taleforge.narrator.adapters.openai_client import OpenAINarrationModel
from taleforge.narrator.handlers import narrate_turn
from taleforge.narrator.model import NarrationModel
from taleforge.narrator.narration import Narrator, RetryPolicy
from taleforge.narrator.settings import Settings


def create_app(settings: Settings, *, llm: NarrationModel | None = None) -> FastStream:
    broker = NatsBroker(settings.nats_url, graceful_timeout=settings.graceful_timeout_s)
    openai_model = OpenAINarrationModel(settings) if llm is None else None
    narrator = Narrator(
        bus=BrokerBus(broker),
        model=llm or openai_model,  # type: ignore[arg-type]
        model_name=settings.model,
        retry=RetryPolicy(
            max_deliver=settings.max_deliver,
            backoff_s=settings.retry_backoff_s,
            backoff_max_s=settings.retry_backoff_max_s,
            heartbeat_s=settings.ack_wait_s / 3,
        ),
        image_style=settings.image_style,
    )

    # MANUAL acks: the narrator decides between ack, nack-with-delay and term itself.
    @broker.subscriber(
        TURN_REQUESTED_FILTER,
        stream=JStream(STREAM_NAME, declare=False),
        durable=settings.consumer_name,
        config=consumer_config(settings),
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
    )
    async def on_turn_requested(msg: NatsMessage) -> None:
        await narrate_turn(msg, narrator)

    app = FastStream(broker)

    @app.on_startup
    async def wait_for_stream_and_consumer() -> None:
        await prepare_jetstream(settings)

    if openai_model is not None:

        @app.after_shutdown
        async def close_model() -> None:
            await openai_model.close()

    return app
