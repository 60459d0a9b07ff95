"""Each Dockerfile, checked by reading it: what it copies, how it installs, how it runs."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The workspace's members, as the root pyproject.toml names them (globs included).
_WORKSPACE = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
LOCK_FILES = {"pyproject.toml", "uv.lock"} | {
    str(path.relative_to(ROOT))
    for pattern in _WORKSPACE["members"]
    for path in ROOT.glob(f"{pattern}/pyproject.toml")
}
HEALTHCHECK_SCRIPT = "deploy/docker/healthcheck.py"


def sources_of(image: str) -> set[str]:
    return {"sandboxes/"} if image == "sandboxes" else {"contracts/", f"services/{image}/"}


def package_of(image: str) -> str:
    return f"taleforge-{image}"


def test_two_stages_on_one_python(image: str, dockerfiles: dict[str, Any]) -> None:
    build, final = dockerfiles[image]
    assert build.name == "build"
    # The venv's interpreter path must exist in the final stage: same base image for both.
    assert build.base == final.base == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in (ROOT / _path(image)).read_text()


def test_build_stage_copies_only_the_lock_and_its_own_sources(
    image: str, dockerfiles: dict[str, Any]
) -> None:
    build = dockerfiles[image][0]
    copied = [
        source for sources, _, flags in build.copies() if "from" not in flags for source in sources
    ]
    # Every member's pyproject.toml: `uv sync --locked` checks uv.lock against all of them.
    assert LOCK_FILES <= set(copied), f"missing {sorted(LOCK_FILES - set(copied))}"
    assert set(copied) == LOCK_FILES | sources_of(image), sorted(set(copied))
    for sources, destination, flags in build.copies():
        if "from" not in flags and len(sources) == 1 and sources[0] != "uv.lock":
            expected = sources[0] if sources[0].endswith("/") else str(Path(sources[0]).parent)
            assert destination.rstrip("/") == expected.rstrip("/"), (sources, destination)


def test_dependencies_install_before_the_code_from_the_lock(
    image: str, dockerfiles: dict[str, Any]
) -> None:
    build = dockerfiles[image][0]
    steps = [(i.keyword, i.args) for i in build.instructions if i.keyword in {"COPY", "RUN"}]
    syncs = [n for n, (kind, args) in enumerate(steps) if kind == "RUN" and "uv sync" in args]
    # Our code: a COPY of a whole folder (the lock files are copied one by one).
    code = [
        n
        for n, (kind, args) in enumerate(steps)
        if kind == "COPY" and "--from" not in args and args.split()[0].endswith("/")
    ]
    assert len(syncs) == 2, steps
    first, second = (steps[n][1] for n in syncs)
    # The cached layer: third-party packages only, before any of our code is copied.
    assert syncs[0] < min(code) and syncs[1] > max(code)
    assert "--no-install-workspace" in first
    for args in (first, second):
        for flag in ("--locked", "--no-dev", "--no-editable", f"--package {package_of(image)}"):
            assert flag in args, (flag, args)
        assert "--mount=type=cache,target=/root/.cache/uv" in args


def test_final_stage_is_the_venv_a_non_root_user_and_a_healthcheck(
    image: str, dockerfiles: dict[str, Any]
) -> None:
    final = dockerfiles[image][-1]
    copies = final.copies()
    assert (["/app/.venv"], "/app/.venv", {"from": "build"}) in copies
    assert ([HEALTHCHECK_SCRIPT], "/app/healthcheck.py", {}) in copies
    assert len(copies) == 2, copies
    users = final.all("USER")
    assert users and users[-1].args not in {"root", "0"}, "the image must end as a non-root user"
    assert any("useradd" in run.args and users[-1].args in run.args for run in final.all("RUN"))
    (check,) = final.all("HEALTHCHECK")
    assert "CMD python /app/healthcheck.py" in check.args
    assert final.env()["PATH"].startswith("/app/.venv/bin:")
    (command,) = final.all("CMD")
    module = "taleforge.sandboxes.openai" if image == "sandboxes" else f"taleforge.{image}"
    assert command.args.startswith(f'["python", "-m", "{module}"')


def test_api_listens_on_all_interfaces(dockerfiles: dict[str, Any]) -> None:
    env = dockerfiles["api"][-1].env()
    assert env["API_HOST"] == "0.0.0.0" and env["API_PORT"] == "8000"


def test_dockerignore_keeps_what_the_images_copy(dockerfiles: dict[str, Any]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", ".env"} <= set(patterns)
    for image, stages in dockerfiles.items():
        for stage in stages:
            for sources, _, flags in stage.copies():
                for source in sources if "from" not in flags else []:
                    path = source.rstrip("/")
                    hits = [p for p in patterns if fnmatch.fnmatch(path, p.lstrip("*/"))]
                    hits += [p for p in patterns if path.startswith(p.rstrip("/") + "/")]
                    assert not hits, f"{image}: .dockerignore drops {source} ({hits})"
                    assert (ROOT / path).exists(), f"{image}: COPY {source}: no such path"


def _path(image: str) -> str:
    return "sandboxes/Dockerfile" if image == "sandboxes" else f"services/{image}/Dockerfile"
