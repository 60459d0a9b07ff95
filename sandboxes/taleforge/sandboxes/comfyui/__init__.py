"""A local stand-in for ComfyUI that speaks its real HTTP + websocket API (0.3.x shapes)."""

from taleforge.sandboxes.comfyui.app import create_app
from taleforge.sandboxes.comfyui.cli import main
from taleforge.sandboxes.comfyui.config import ComfyUISandboxConfig, SandboxFaults

__all__ = ["ComfyUISandboxConfig", "SandboxFaults", "create_app", "main"]
