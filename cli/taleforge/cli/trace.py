"""`taleforge trace TURN_ID`: a turn's spans as a waterfall in the terminal.

Reads the spans `taleforge dev` collects (`.var/dev/traces.jsonl`, see trace_sink.py),
finds the trace(s) holding a span whose `taleforge.turn_id` is TURN_ID (a trace id works
too), and prints every span of them as a tree, each with its start, duration and a bar on
a common time axis.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TURN_ATTRIBUTE = "taleforge.turn_id"
NAME_WIDTH = 46
BAR_WIDTH = 40

Record = dict[str, Any]
# Ids in names (FastStream names its spans by subject, story.events.<session>.<type>) and
# paths only make the lines longer.
_UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
_TABLE = re.compile(r"\b(?:INTO|UPDATE|FROM)\s+([\w.\"]+)", re.IGNORECASE)


def load_spans(path: Path) -> list[Record]:
    spans = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                spans.append(json.loads(line))
    return spans


def traces_of(spans: Iterable[Record], key: str) -> list[str]:
    """Trace ids of the turn `key` (or `key` itself when it is a trace id), oldest first."""
    key = key.strip().lower()
    found: dict[str, int] = {}
    for span in spans:
        trace_id = span["trace_id"]
        if span.get("attributes", {}).get(TURN_ATTRIBUTE) == key or trace_id == key:
            found[trace_id] = min(found.get(trace_id, span["start_ns"]), span["start_ns"])
    return sorted(found, key=found.__getitem__)


def _tree(spans: list[Record]) -> list[tuple[int, Record]]:
    """Depth-first, children by start time; a span whose parent is missing is a root."""
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[Record]] = defaultdict(list)
    for span in spans:
        parent = span.get("parent_span_id")
        children[parent if parent in ids else None].append(span)
    ordered: list[tuple[int, Record]] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: (s["start_ns"], s["end_ns"])):
            ordered.append((depth, span))
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    return ordered


def label(span: Record) -> str:
    """The span's name, ids elided; HTTP and SQL client spans (named by their method or
    statement) get the path or the table."""
    name = str(span["name"])
    attributes = span.get("attributes", {})
    url = attributes.get("url.full") or attributes.get("http.url")
    statement = attributes.get("db.query.text") or attributes.get("db.statement")
    if name.isupper() and " " not in name:
        if url:
            name = f"{name} {urlsplit(str(url)).path}"
        elif statement and (table := _TABLE.search(str(statement))):
            name = f"{name} {table.group(1)}"
    return _UUID.sub("*", name)


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.1f} ms" if ns < 1e10 else f"{ns / 1e9:,.2f} s"


def waterfall(spans: list[Record], *, bar_width: int = BAR_WIDTH) -> str:
    """One trace's spans: start offset, duration, service, indented name, bar."""
    t0 = min(span["start_ns"] for span in spans)
    total = max(max(span["end_ns"] for span in spans) - t0, 1)
    services = max(len(str(span.get("service", "?"))) for span in spans)
    half = bar_width // 2
    axis = f"|{'0':<{half}}{_ms(total):>{bar_width - half}}|"
    lines = [
        f"trace {spans[0]['trace_id']}  {len(spans)} spans  {_ms(total)}",
        f"{'start':>11} {'duration':>11}  {'service':<{services}}  {'span':<{NAME_WIDTH}} {axis}",
    ]
    for depth, span in _tree(spans):
        start, end = span["start_ns"] - t0, span["end_ns"] - t0
        first = min(int(start / total * bar_width), bar_width - 1)
        last = max(first + 1, math.ceil(end / total * bar_width))
        bar = " " * first + "█" * (last - first) + " " * (bar_width - last)
        name = "  " * depth + label(span) + (" !" if span.get("status") == "ERROR" else "")
        if len(name) > NAME_WIDTH:
            name = name[: NAME_WIDTH - 1] + "…"
        lines.append(
            f"{_ms(start):>11} {_ms(end - start):>11}  {span.get('service', '?'):<{services}}"
            f"  {name:<{NAME_WIDTH}} |{bar}|"
        )
    return "\n".join(lines)


def run(path: Path, key: str) -> int:
    if not path.exists():
        print(f"no traces at {path} (taleforge dev writes them there)", file=sys.stderr)
        return 1
    spans = load_spans(path)
    trace_ids = traces_of(spans, key)
    if not trace_ids:
        print(f"no trace of turn {key} in {path}", file=sys.stderr)
        return 1
    by_trace: dict[str, list[Record]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    print("\n\n".join(waterfall(by_trace[trace_id]) for trace_id in trace_ids))
    return 0


def register(commands: Any, data_dir: Path) -> None:
    """Add `trace` to the CLI's subcommands (`commands` from add_subparsers)."""
    parser = commands.add_parser("trace", help="a turn's spans as a waterfall (taleforge dev)")
    parser.add_argument("turn_id", help="the turn's id (or a trace id)")
    parser.add_argument(
        "--file",
        default=str(data_dir / "traces.jsonl"),
        help="spans collected by taleforge dev (default: .var/dev/traces.jsonl)",
    )
    parser.set_defaults(func=lambda args: run(Path(args.file), args.turn_id))
