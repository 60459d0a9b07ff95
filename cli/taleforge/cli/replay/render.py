"""Original and re-narrated turns side by side (text), or one JSON object per turn."""

from __future__ import annotations

import json
import shutil
import textwrap
from itertools import zip_longest
from typing import Any

from taleforge.cli.replay.renarrate import Comparison, ReplayReport, Version
from taleforge.contracts import TokenUsage

GUTTER = " │ "


def width() -> int:
    return max(80, min(160, shutil.get_terminal_size((120, 40)).columns))


def _tokens(usage: TokenUsage | None) -> str:
    if usage is None:
        return "no tokens"
    cached = f" (cached {usage.cached_tokens})" if usage.cached_tokens else ""
    return f"in {usage.input_tokens}{cached} out {usage.output_tokens}"


def _money(value: float | None) -> str:
    return "$?" if value is None else f"${value:.6f}"


def _column(label: str, version: Version, column: int) -> list[str]:
    head = f"{label} · {version.model or '-'}"
    lines = [head[:column], f"{_tokens(version.usage)} · {_money(version.cost_usd)}"[:column]]
    for fold in version.folds:
        lines.append(f"+ summary ({fold.model}) {_money(fold.cost_usd)}"[:column])
    lines.append("")
    body = version.text if version.text is not None else f"[{version.failed}]"
    lines += textwrap.wrap(body, column) or [""]
    return lines


def side_by_side(comparison: Comparison, total_width: int | None = None) -> str:
    total_width = total_width or width()
    column = (total_width - len(GUTTER)) // 2
    request = comparison.request
    title = f" turn #{comparison.number} · {request.input_type.value}: {request.text!r} "
    out = [f"══{title}".ljust(total_width, "═")[:total_width]]
    left = _column("original", comparison.original, column)
    right = _column("replay", comparison.replay, column)
    for a, b in zip_longest(left, right, fillvalue=""):
        out.append(f"{a:<{column}}{GUTTER}{b}".rstrip())
    return "\n".join(out)


def _sum(versions: list[Version]) -> tuple[TokenUsage, float, float, bool]:
    totals = TokenUsage()
    cost, summaries, priced = 0.0, 0.0, True
    for v in versions:
        if v.usage is not None:
            totals = TokenUsage(
                input_tokens=totals.input_tokens + v.usage.input_tokens,
                cached_tokens=totals.cached_tokens + v.usage.cached_tokens,
                output_tokens=totals.output_tokens + v.usage.output_tokens,
                reasoning_tokens=totals.reasoning_tokens + v.usage.reasoning_tokens,
                total_tokens=totals.total_tokens + v.usage.total_tokens,
            )
        if v.text is not None and v.cost_usd is None:
            priced = False
        cost += v.cost_usd or 0.0
        summaries += v.summary_cost_usd
    return totals, cost, summaries, priced


def totals(report: ReplayReport) -> str:
    lines = []
    for label, versions in (
        ("original", [c.original for c in report.turns]),
        ("replay  ", [c.replay for c in report.turns]),
    ):
        usage, cost, summaries, priced = _sum(versions)
        narrated = sum(1 for v in versions if v.text is not None)
        price = _money(cost) + ("" if priced else " (some unpriced)")
        lines.append(
            f"{label}  {narrated}/{len(versions)} narrated · {_tokens(usage)} · {price}"
            + (f" + summaries {_money(summaries)}" if summaries else "")
        )
    return "\n".join(lines)


def header(report: ReplayReport) -> str:
    model = report.model or "as recorded"
    temperature = "as recorded" if report.temperature is None else f"{report.temperature:g}"
    return (
        f"Re-narrating session {report.session_id} from turn {report.from_turn} "
        f"({report.planned} turns): model {model}, temperature {temperature}.\n"
        f"Scratch run {report.run_id}: events on {report.subjects}; nothing live changes."
    )


def footer(report: ReplayReport) -> str:
    done = f"{len(report.turns)} of {report.planned} turns"
    status = f"interrupted after {done}" if report.interrupted else f"done: {done}"
    return f"{'═' * 10} {status}\n{totals(report)}"


def _version_json(version: Version) -> dict[str, Any]:
    return {
        "text": version.text,
        "failed": version.failed,
        "model": version.model,
        "usage": None if version.usage is None else version.usage.model_dump(),
        "cost_usd": version.cost_usd,
        "summary_cost_usd": version.summary_cost_usd,
    }


def comparison_json(comparison: Comparison) -> str:
    request = comparison.request
    return json.dumps(
        {
            "turn_number": comparison.number,
            "turn_id": str(request.turn_id),
            "input_type": request.input_type.value,
            "input": request.text,
            "original": _version_json(comparison.original),
            "replay": _version_json(comparison.replay),
        },
        ensure_ascii=False,
    )
