"""`taleforge`: the developer CLI.

taleforge dev                 run the whole stack locally (what `make dev` runs)
taleforge token [--user ID] [--admin]   print a dev access token
taleforge sandbox openai|comfyui [ARGS]   run one sandbox server
taleforge schemas export      write the events' JSON Schemas into contracts/schemas
taleforge events --session S | --turn T | --since 15m [--follow] [--json]   a timeline
taleforge show-prompt TURN_ID   the exact prompt the narrator sent for a turn
taleforge replay --session S --renarrate [--model M] [--temperature T] [--from-turn N]
taleforge replay --rebuild --into DATABASE_URL
taleforge trace TURN_ID       the turn's spans as a waterfall (what taleforge dev traced)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from taleforge.cli.debugging import add_debug_commands
from taleforge.cli.tokens import DEV_USER_ID, mint_token
from taleforge.cli.trace import register as add_trace_command

if TYPE_CHECKING:
    from taleforge.cli.dev import DevStack

REPO_ROOT = Path(__file__).resolve().parents[3]


def _default_data_dir() -> Path:
    return Path(os.environ.get("TALEFORGE_DATA_DIR", REPO_ROOT / ".var" / "dev"))


def cmd_dev(args: argparse.Namespace) -> int:
    from taleforge.cli.dev import DevConfig, DevStack

    config = DevConfig.from_env(Path(args.data_dir))
    config.openai_token_delay_ms = args.token_delay_ms
    config.comfyui_render_ms = args.render_ms
    stack = DevStack(config)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except BaseException as exc:
        print(f"taleforge dev: could not start the stack: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    token = mint_token(DEV_USER_ID)
    print(_banner(stack, token), flush=True)
    exit_code = 0
    while not stopping.wait(0.5):
        dead = stack.dead_children()
        if dead:
            print(f"taleforge dev: {', '.join(dead)} stopped; shutting down", file=sys.stderr)
            exit_code = 1
            break
    print("taleforge dev: stopping…", flush=True)
    stack.stop()
    print("taleforge dev: stopped", flush=True)
    return exit_code


def _banner(stack: DevStack, token: str) -> str:
    return f"""
──────────────────────────────────────────────────────────────────────────────
 Taleforge is running.  Ctrl-C stops everything.

   API         {stack.api_url}        (OpenAPI: {stack.api_url}/docs)
   NATS        {stack.nats_url}
   Postgres    {stack.database_url}
   OpenAI      {stack.openai_base_url}
   ComfyUI     {stack.comfyui_url}

 Dev token (player {DEV_USER_ID}):
   export TOKEN={token}

 Play two turns:  API={stack.api_url} scripts/play.sh
 A turn's trace:  taleforge trace TURN_ID     (spans in {stack.traces_path})
──────────────────────────────────────────────────────────────────────────────
"""


def cmd_token(args: argparse.Namespace) -> int:
    print(mint_token(args.user, ttl_s=args.ttl, admin=args.admin))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    if args.which == "openai":
        from taleforge.sandboxes.openai import main as openai_main

        return int(openai_main(args.rest))
    from taleforge.sandboxes.comfyui import main as comfyui_main

    return int(comfyui_main(args.rest))


def cmd_schemas(args: argparse.Namespace) -> int:
    from taleforge.contracts.schema_export import DEFAULT_DIR, export_schemas

    for path in export_schemas(Path(args.dir) if args.dir else DEFAULT_DIR):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taleforge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole stack locally")
    dev.add_argument(
        "--data-dir",
        default=str(_default_data_dir()),
        help="where NATS and Postgres keep their data (default .var/dev)",
    )
    dev.add_argument(
        "--token-delay-ms", type=int, default=25, help="OpenAI sandbox delay per streamed token"
    )
    dev.add_argument("--render-ms", type=int, default=800, help="ComfyUI sandbox render time")
    dev.set_defaults(func=cmd_dev)

    token = sub.add_parser("token", help="print a dev access token (HS256, JWT_SECRET)")
    token.add_argument("--user", default=str(DEV_USER_ID), help="player id (the token's sub)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires")
    token.add_argument(
        "--admin", action="store_true", help="carry the admin claim (API_ADMIN_CLAIM/VALUE)"
    )
    token.set_defaults(func=cmd_token)

    sandbox = sub.add_parser("sandbox", help="run a sandbox server (openai or comfyui)")
    sandbox.add_argument("which", choices=["openai", "comfyui"])
    sandbox.add_argument("rest", nargs=argparse.REMAINDER, help="the sandbox's own options")
    sandbox.set_defaults(func=cmd_sandbox)

    add_debug_commands(sub)  # events, show-prompt, replay
    add_trace_command(sub, _default_data_dir())

    schemas = sub.add_parser("schemas", help="event JSON Schemas")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("--dir", default=None, help="output folder (default contracts/schemas)")
    schemas.set_defaults(func=cmd_schemas)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
