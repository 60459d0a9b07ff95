"""Composition root: NATS connection, consumer, session state, live settings, model, narrator."""

from __future__ import annotations

import logging

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from taleforge.narrator.adapters.bus import NatsBus
from taleforge.narrator.adapters.consumer import FetchLoop, prepare_jetstream
from taleforge.narrator.adapters.exhausted import ExhaustedTurns
from taleforge.narrator.adapters.openai_client import OpenAINarrationModel
from taleforge.narrator.adapters.session_events import JetStreamSessionEvents
from taleforge.narrator.adapters.session_store import KvSessionStore, open_bucket
from taleforge.narrator.adapters.settings_kv import KvSettings
from taleforge.narrator.adapters.story_log import JetStreamStoryLog
from taleforge.narrator.dispatch import SessionDispatcher
from taleforge.narrator.handlers import handle_message
from taleforge.narrator.model import NarrationModel
from taleforge.narrator.narration import FirstDeltaObserver, Narrator, NarratorConfig
from taleforge.narrator.restore import Restorer
from taleforge.narrator.settings import Settings
from taleforge.narrator.telemetry import TracedModel, consuming
from taleforge.narrator.tokens import make_counter

log = logging.getLogger(__name__)


class NarratorRuntime:
    """Everything with a lifetime: started after the broker, stopped before it."""

    def __init__(
        self,
        settings: Settings,
        broker: NatsBroker,
        llm: NarrationModel | None,
        observer: FirstDeltaObserver | None,
    ) -> None:
        self.settings = settings
        self._broker = broker
        self._own_model = OpenAINarrationModel(settings) if llm is None else None
        self.model: NarrationModel = llm or self._own_model  # type: ignore[assignment]
        self._observer = observer
        self._loop: FetchLoop | None = None
        self._live: KvSettings | None = None
        self.dispatcher: SessionDispatcher[Msg] | None = None

    async def start(self) -> None:
        settings = self.settings
        nc = self._broker.connection
        js = nc.jetstream()
        await prepare_jetstream(settings, js)
        sessions = await open_bucket(js, settings.sessions_bucket)
        self._live = KvSettings(
            await open_bucket(js, settings.settings_bucket), settings.live_defaults()
        )
        await self._live.start()
        # One store for both: its cache holds the KV revision each write must follow.
        store = KvSessionStore(sessions)
        restorer = Restorer(store, JetStreamSessionEvents(js))
        narrator = Narrator(
            bus=NatsBus(nc, js),
            model=TracedModel(self.model, settings),
            store=store,
            story_log=JetStreamStoryLog(js),
            settings=self._live,
            counter=make_counter(settings.tokenizer),
            config=NarratorConfig.from_settings(settings),
            observer=self._observer,
        )

        exhausted = ExhaustedTurns(js, settings.consumer_name, narrator)

        async def handle(msg: Msg) -> None:
            with consuming(msg, settings.consumer_name):
                await handle_message(msg, narrator, restorer, exhausted)

        self.dispatcher = SessionDispatcher(handle)
        self._loop = FetchLoop(js, settings, self.dispatcher)
        await self._loop.start()
        log.info(
            "narrator ready: api=%s model=%s concurrency=%d budget=%d tokens",
            settings.api,
            settings.model,
            settings.concurrency,
            settings.context_budget_tokens,
        )

    async def stop(self) -> None:
        """Idempotent: stop fetching, let in-flight turns finish (the broker then drains)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            await loop.stop()
        if self.dispatcher is not None:
            # Queued, unstarted messages are redelivered after ack_wait; in-flight ones finish.
            await self.dispatcher.drain(self.settings.graceful_timeout_s)
        live, self._live = self._live, None
        if live is not None:
            await live.stop()
        model, self._own_model = self._own_model, None
        if model is not None:
            await model.close()


def create_app(
    settings: Settings,
    *,
    llm: NarrationModel | None = None,
    observer: FirstDeltaObserver | None = None,
) -> FastStream:
    # The broker owns the one NATS connection and the app's lifecycle; the runtime fetches
    # and publishes on that connection with nats-py (in order, KV buckets) and has no
    # FastStream subscribers, so its own drain (graceful_timeout_s) governs shutdown.
    broker = NatsBroker(settings.nats_url, name="narrator")
    app = FastStream(broker)
    runtime = NarratorRuntime(settings, broker, llm, observer)
    app.after_startup(runtime.start)
    app.on_shutdown(runtime.stop)
    return app
