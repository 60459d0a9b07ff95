"""The CI workflow and the KEDA example, checked by reading them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from taleforge.contracts import STREAM_NAME

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_what_ci_run_runs_then_builds_every_image(dockerfiles: dict[str, Any]) -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    check_steps = [step.get("run") for step in workflow["jobs"]["check"]["steps"]]
    ci_run = (ROOT / ".ci/run").read_text()
    for target in ("make lint", "make test"):
        assert target in ci_run and target in check_steps
    images = workflow["jobs"]["images"]
    assert images["needs"] == "check"
    matrix = images["strategy"]["matrix"]["include"]
    built = {entry["image"]: entry["dockerfile"] for entry in matrix}
    assert set(built) == set(dockerfiles)
    assert all((ROOT / path).is_file() for path in built.values())
    push = next(s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert push["with"]["context"] == "."
    assert push["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"


def test_keda_scales_the_illustrator_on_its_consumer() -> None:
    from taleforge.illustrator.adapters.bus import CONSUMER_NAME

    scaled = yaml.safe_load((ROOT / "deploy/keda/illustrator-scaledobject.yaml").read_text())
    assert scaled["kind"] == "ScaledObject"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == STREAM_NAME
    assert trigger["metadata"]["consumer"] == CONSUMER_NAME
