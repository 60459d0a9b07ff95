"""Command line of the ComfyUI sandbox: `python -m taleforge.sandboxes.comfyui`."""

from __future__ import annotations

import argparse

from taleforge.sandboxes.comfyui.config import ComfyUISandboxConfig, SandboxFaults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taleforge sandbox comfyui",
        description="A local server speaking ComfyUI's HTTP + websocket API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--render-ms", type=int, default=200, help="simulated time per prompt")
    parser.add_argument("--no-previews", action="store_true", help="send no binary previews")
    parser.add_argument("--fail-next", type=int, default=0, help="next N prompts fail")
    parser.add_argument("--hang-next", type=int, default=0, help="next N prompts hang")
    parser.add_argument(
        "--drop-socket-next", type=int, default=0, help="next N prompts drop their websocket"
    )
    parser.add_argument("--drop-after-progress", type=int, default=2)
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from taleforge.sandboxes.comfyui.app import create_app
    from taleforge.sandboxes.serving import serve_forever

    config = ComfyUISandboxConfig(
        render_ms=args.render_ms,
        preview_frames=not args.no_previews,
        faults=SandboxFaults(
            fail_next=args.fail_next,
            hang_next=args.hang_next,
            drop_socket_next=args.drop_socket_next,
            drop_after_progress=args.drop_after_progress,
        ),
    )
    try:
        serve_forever(create_app(config), args.host, args.port, log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    return 0
