"""Operator commands: `python -m taleforge.illustrator templates register|list|show`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import nats

from taleforge.illustrator.settings import Settings
from taleforge.illustrator.templates import KINDS, TemplateRegistry
from taleforge.illustrator.workflows import WorkflowError, placeholders_in


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m taleforge.illustrator",
        description="Run the illustrator (no arguments) or manage its workflow templates.",
    )
    commands = root.add_subparsers(dest="command")
    templates = commands.add_parser("templates", help="workflow templates per image kind")
    actions = templates.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="validate and store a new template version")
    register.add_argument("kind", choices=KINDS)
    register.add_argument("file", type=Path, help="API-format workflow JSON")
    actions.add_parser("list", help="each kind's current template and version")
    show = actions.add_parser("show", help="print one template (current or a version)")
    show.add_argument("kind", choices=KINDS)
    show.add_argument("--version", type=int, default=None)
    return root


async def templates_command(args: argparse.Namespace, settings: Settings) -> int:
    nc = await nats.connect(settings.nats_url)
    try:
        registry = await TemplateRegistry.open(
            nc.jetstream(), settings.allowed_placeholders, settings.template_bucket
        )
        if args.action == "register":
            template = await registry.register(args.kind, args.file.read_bytes())
            print(f"registered {template.kind} template version {template.version}")
        elif args.action == "list":
            for template in await registry.current():
                names = ", ".join(sorted(placeholders_in(template.workflow)))
                print(f"{template.kind}\tv{template.version}\t{template.source}\t{names}")
        else:
            template = await registry.get(args.kind, args.version)
            print(json.dumps(template.workflow, indent=2))
        return 0
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await nc.close()


def run_command(argv: list[str], settings: Settings) -> int:
    args = parser().parse_args(argv)
    return asyncio.run(templates_command(args, settings))
