"""JSON Schema for every event, written into the repo so consumers in any language can use it.

Run `python -m taleforge.contracts.schema_export [DIR]` (or `taleforge schemas export`);
a test fails when the committed files and the models drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from taleforge.contracts.events import ALL_EVENTS

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, one file per event type and version."""
    rendered: dict[str, str] = {}
    for cls in ALL_EVENTS:
        schema = cls.model_json_schema(mode="serialization")
        schema["$id"] = f"https://taleforge.dev/schemas/{cls.TYPE}.v{cls.VERSION}.json"
        rendered[f"{cls.TYPE}.v{cls.VERSION}.json"] = (
            json.dumps(schema, indent=2, sort_keys=True) + "\n"
        )
    return rendered


def export_schemas(directory: Path = DEFAULT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    rendered = render_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DEFAULT_DIR
    for path in export_schemas(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
