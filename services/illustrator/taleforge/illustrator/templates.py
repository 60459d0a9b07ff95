"""Workflow templates per image kind: shipped with the release, replaceable by operators.

The shipped `workflows/<kind>.json` is version 0. An operator registers a replacement in
the NATS KV bucket `illustrator-templates` (key = kind, value = the API-format JSON); the
KV revision is its version, and earlier revisions stay readable so an image can be
reproduced with the exact template it used. Registration validates first: a template the
illustrator could not fill or run is refused with the reason, before any player sees it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from taleforge.contracts import ImageKind
from taleforge.illustrator.adapters.buckets import open_key_value
from taleforge.illustrator.workflows import WorkflowError, load_template, parse_template

log = logging.getLogger(__name__)

TEMPLATE_BUCKET = "illustrator-templates"
SHIPPED_VERSION = 0
KINDS = tuple(kind.value for kind in ImageKind)


@dataclass(frozen=True)
class Template:
    kind: str
    version: int  # SHIPPED_VERSION, or the template bucket's revision
    workflow: dict[str, Any]

    @property
    def source(self) -> str:
        return "shipped" if self.version == SHIPPED_VERSION else "registered"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise WorkflowError(f"unknown image kind {kind!r}; kinds are: {', '.join(KINDS)}")
    return kind


class TemplateRegistry:
    def __init__(self, kv: KeyValue, allowed: frozenset[str]) -> None:
        self._kv = kv
        self.allowed = allowed

    @classmethod
    async def open(
        cls, js: JetStreamContext, allowed: frozenset[str], bucket: str = TEMPLATE_BUCKET
    ) -> TemplateRegistry:
        config = KeyValueConfig(
            bucket=bucket,
            description="Taleforge illustrator workflow templates (key = image kind)",
            history=64,  # old versions stay readable for reproduction
            storage=StorageType.FILE,
        )
        return cls(await open_key_value(js, config), allowed)

    async def get(self, kind: str, version: int | None = None) -> Template:
        """The current template of `kind` (or one version of it)."""
        check_kind(kind)
        if version == SHIPPED_VERSION:
            return Template(kind, SHIPPED_VERSION, load_template(kind))
        try:
            entry = await self._kv.get(kind, revision=version)
        except KeyNotFoundError:
            if version is not None:
                raise WorkflowError(f"no version {version} of the {kind} template") from None
            return Template(kind, SHIPPED_VERSION, load_template(kind))
        try:
            workflow = parse_template(entry.value or b"", self.allowed)
        except WorkflowError as exc:
            # Settings may have dropped a placeholder it relied on since it was registered.
            raise WorkflowError(f"{kind} template v{entry.revision}: {exc}") from None
        return Template(kind, int(entry.revision or 0), workflow)

    async def register(self, kind: str, text: str | bytes) -> Template:
        """Validate and store a new version of `kind`'s template."""
        check_kind(kind)
        workflow = parse_template(text, self.allowed)
        revision = await self._kv.put(kind, json.dumps(workflow, indent=1).encode())
        log.info("registered %s template version %d", kind, revision)
        return Template(kind, revision, workflow)

    async def current(self) -> list[Template]:
        """Every kind's template as it would be used now."""
        return [await self.get(kind) for kind in KINDS]
