"""A local stand-in for the OpenAI API that speaks its real wire format.

The official SDK works against it unchanged (`AsyncOpenAI(base_url=<url>/v1)`). Replies are
deterministic (`deterministic_reply` of the last user message) and faults can be injected
through the config or `PUT /_sandbox/faults`.
"""

from taleforge.sandboxes.openai.app import create_app
from taleforge.sandboxes.openai.cli import main
from taleforge.sandboxes.openai.config import FaultConfig, OpenAISandboxConfig
from taleforge.sandboxes.openai.prompt import last_user_text
from taleforge.sandboxes.openai.state import SandboxState
from taleforge.sandboxes.openai.storyteller import deterministic_reply, stream_tokens

__all__ = [
    "FaultConfig",
    "OpenAISandboxConfig",
    "SandboxState",
    "create_app",
    "deterministic_reply",
    "last_user_text",
    "main",
    "stream_tokens",
]
