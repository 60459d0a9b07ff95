"""Command line: `python -m taleforge.sandboxes.openai` (and `taleforge sandbox openai`)."""

from __future__ import annotations

import argparse

from taleforge.sandboxes.openai.app import create_app
from taleforge.sandboxes.openai.config import FaultConfig, OpenAISandboxConfig
from taleforge.sandboxes.serving import serve_forever


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taleforge.sandboxes.openai",
        description="A local OpenAI-compatible server with deterministic replies and faults.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--first-token-delay-ms", type=float, default=0.0, help="extra pause before the first"
    )
    parser.add_argument("--require-api-key", action="store_true")
    faults = parser.add_argument_group("faults (also settable with PUT /_sandbox/faults)")
    faults.add_argument("--rate-limit-first-n", type=int, default=0)
    faults.add_argument("--retry-after-s", type=float, default=0.05)
    faults.add_argument("--server-error-next-n", type=int, default=0)
    faults.add_argument("--insufficient-quota", action="store_true")
    faults.add_argument("--auth-failure", action="store_true")
    faults.add_argument("--stall-after-deltas", type=int)
    faults.add_argument("--stall-s", type=float, help="omit to stall until the client leaves")
    faults.add_argument("--drop-after-deltas", type=int)
    faults.add_argument("--illustrate", choices=["auto", "always", "never"], default="auto")
    faults.add_argument("--error-event-after-deltas", type=int)
    faults.add_argument("--error-event-shape", choices=["nested", "flat"], default="nested")
    faults.add_argument("--error-event-code", default="server_error")
    faults.add_argument("--malformed-after-deltas", type=int)
    faults.add_argument("--reject-phrase", help="answer 400 to inputs containing this phrase")
    faults.add_argument("--stream-fault-calls", type=int, help="omit to apply to every stream")
    return parser


def config_from_args(argv: list[str] | None = None) -> tuple[OpenAISandboxConfig, str, int]:
    args = _parser().parse_args(argv)
    faults = FaultConfig(
        rate_limit_first_n=args.rate_limit_first_n,
        retry_after_s=args.retry_after_s,
        server_error_next_n=args.server_error_next_n,
        insufficient_quota=args.insufficient_quota,
        auth_failure=args.auth_failure,
        stall_after_deltas=args.stall_after_deltas,
        stall_s=args.stall_s,
        drop_after_deltas=args.drop_after_deltas,
        illustrate=args.illustrate,
        error_event_after_deltas=args.error_event_after_deltas,
        error_event_shape=args.error_event_shape,
        error_event_code=args.error_event_code,
        malformed_after_deltas=args.malformed_after_deltas,
        reject_phrase=args.reject_phrase,
        stream_fault_calls=args.stream_fault_calls,
    )
    config = OpenAISandboxConfig(
        token_delay_ms=args.token_delay_ms,
        first_token_delay_ms=args.first_token_delay_ms,
        require_api_key=args.require_api_key,
        faults=faults,
    )
    return config, args.host, args.port


def main(argv: list[str] | None = None) -> int:
    config, host, port = config_from_args(argv)
    try:
        serve_forever(create_app(config), host, port)
    except KeyboardInterrupt:
        pass
    return 0
