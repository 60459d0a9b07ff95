"""The OpenAI sandbox application: the real wire format, deterministic text, fault knobs."""

from __future__ import annotations

from fastapi import FastAPI

from taleforge.sandboxes.openai import chat_api, control, responses_api
from taleforge.sandboxes.openai.config import OpenAISandboxConfig
from taleforge.sandboxes.openai.generation import hide_simulated_drops_in_logs
from taleforge.sandboxes.openai.state import SandboxState


def create_app(config: OpenAISandboxConfig | None = None) -> FastAPI:
    """A fresh sandbox; its run-time state is `app.state.sandbox` (a `SandboxState`)."""
    app = FastAPI(title="Taleforge OpenAI sandbox", docs_url=None, redoc_url=None)
    app.state.sandbox = SandboxState(config or OpenAISandboxConfig())
    app.include_router(responses_api.router)
    app.include_router(chat_api.router)
    app.include_router(control.router)
    hide_simulated_drops_in_logs()
    return app
