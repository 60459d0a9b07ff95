"""Each image built without Docker, then started as compose would start it.

The build stage of each Dockerfile is replayed in a temporary folder standing in for `/app`:
its COPY lines copy from the repository, its `uv sync` lines run as written (cache mounts
dropped). So each service installs alone, from the lockfile, with only the contracts and its
own code: an import its pyproject.toml does not declare fails here. Then its command runs
from that venv with the environment docker-compose.yml gives it (real NATS and Postgres
standing in for the `nats` and `postgres` hosts) until the image's HEALTHCHECK passes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from taleforge.cli.embedded import free_port
from taleforge.persistence.adapters.event_log import ensure_stream

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK_SCRIPT = ROOT / "deploy/docker/healthcheck.py"
# Compose services started here, and the image each runs.
STARTED = {
    "api": "api",
    "narrator": "narrator",
    "illustrator": "illustrator",
    "persistence": "persistence",
    "openai-sandbox": "sandboxes",
    "comfyui-sandbox": "sandboxes",
}
# Build-time choices that only cost time here: the uv cache is on this machine's disk.
SKIPPED_BUILD_ENV = {"UV_COMPILE_BYTECODE", "UV_LINK_MODE"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
HEALTHY_WITHIN_S = 60.0


def _uv_on_path(tmp: Path) -> str:
    """A PATH with `uv` on it: uv's own, or a shim for `python3 -m uv` (what `make` installs)."""
    path = os.environ.get("PATH", "")
    if shutil.which("uv"):
        return path
    shim = tmp / "bin" / "uv"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text('#!/bin/sh\nexec python3 -m uv "$@"\n')
    shim.chmod(0o755)
    return f"{shim.parent}{os.pathsep}{path}"


def _build_env(stage: Any, tmp: Path) -> dict[str, str]:
    outer_venv = {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
    env = {k: v for k, v in os.environ.items() if k not in outer_venv}
    env |= {k: v for k, v in stage.env().items() if k not in SKIPPED_BUILD_ENV}
    env["PATH"] = _uv_on_path(tmp)
    # The image's Python is the only one it has; here, the one running the tests.
    env["UV_PYTHON"] = sys.executable
    return env


def _copy(source: str, destination: str, app: Path) -> None:
    src = ROOT / source
    dest = app / destination
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=IGNORED)
    else:
        target = dest / src.name if destination.endswith("/") else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, dockerfiles: dict[str, Any]
) -> Callable[[str], Path]:
    """`built(image)`: the image's /app folder after its build stage (built once per module)."""
    done: dict[str, Path] = {}

    def build(image: str) -> Path:
        if image in done:
            return done[image]
        app = tmp_path_factory.mktemp(f"image-{image}") / "app"
        app.mkdir()
        stage = dockerfiles[image][0]
        env = _build_env(stage, app.parent)
        for instruction in stage.instructions:
            if instruction.keyword == "COPY" and "--from" not in instruction.args:
                *sources, destination = instruction.args.split()
                for source in sources:
                    _copy(source, destination, app)
            elif instruction.keyword == "RUN":
                words = [w for w in shlex.split(instruction.args) if not w.startswith("--mount=")]
                result = subprocess.run(
                    words, cwd=app, env=env, capture_output=True, text=True, timeout=600
                )
                assert result.returncode == 0, f"{image}: RUN {words}\n{result.stderr[-4000:]}"
        done[image] = app
        return app

    return build


def test_each_image_installs_alone_and_imports_all_its_modules(
    image: str, built: Callable[[str], Path]
) -> None:
    app = built(image)
    package = "taleforge.sandboxes" if image == "sandboxes" else f"taleforge.{image}"
    # Every module, except entry points (they run) and Alembic's env.py (Alembic runs it).
    script = (
        "import importlib, pkgutil\n"
        f"package = importlib.import_module({package!r})\n"
        "for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "    name = module.name\n"
        "    if name.endswith('__main__') or '.migrations.' in name:\n"
        "        continue\n"
        "    importlib.import_module(name)\n"
    )
    python = app / ".venv/bin/python"
    result = subprocess.run(
        [str(python), "-I", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # Only what the image copied is installed: no other member crept in.
    site = next((app / ".venv/lib").glob("python3*/site-packages"))
    members = {p.name.split("-")[0] for p in site.glob("taleforge_*.dist-info")}
    expected = (
        {"taleforge_sandboxes"}
        if image == "sandboxes"
        else {
            "taleforge_contracts",
            f"taleforge_{image}",
        }
    )
    assert members == expected, members


# --- starting each one as compose does ----------------------------------------------------------


class Container:
    """One service process from a built image's venv, with its log kept for failures."""

    def __init__(self, app: Path, log: Path) -> None:
        self.app = app
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        venv_bin = self.app / ".venv/bin"
        return {
            "PATH": f"{venv_bin}{os.pathsep}/usr/bin:/bin",
            "HOME": str(self.app),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._local(argv), env=self.env(env), capture_output=True, text=True, timeout=120
        )

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self._local(argv), env=self.env(env), stdout=out, stderr=subprocess.STDOUT
            )

    def wait_healthy(self, checks: list[list[str]], env: dict[str, str]) -> None:
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        for check in checks:
            while True:
                assert self.process is not None and self.process.poll() is None, self.tail()
                result = self.run(check, env)
                if result.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"{check}: {result.stderr}\n{self.tail()}"
                time.sleep(0.2)  # a health probe is polled, as Docker polls it

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def _local(self, argv: list[str]) -> list[str]:
        # /app/healthcheck.py is the repository's script; `python` is the venv's.
        argv = [a.replace("/app/healthcheck.py", str(HEALTHCHECK_SCRIPT)) for a in argv]
        return [str(self.app / ".venv/bin/python") if argv[0] == "python" else argv[0], *argv[1:]]


def _check_argv(test: list[str] | str) -> list[str]:
    """A compose healthcheck `test`, or a Dockerfile HEALTHCHECK's command, as argv."""
    if isinstance(test, str):  # Dockerfile: CMD <shell form>
        return ["sh", "-c", test.split(" CMD ", 1)[1]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return list(test[1:])


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Callable[[Path], Container]]:
    started: list[Container] = []

    def make(app: Path) -> Container:
        started.append(Container(app, tmp_path / f"service-{len(started)}.log"))
        return started[-1]

    yield make
    for each in started:
        each.stop()


@pytest.mark.parametrize("name", list(STARTED))
async def test_each_service_starts_as_compose_runs_it_and_turns_healthy(
    name: str,
    built: Callable[[str], Path],
    compose: dict[str, Any],
    dockerfiles: dict[str, Any],
    env_example: Any,
    resolve: Any,
    nats_url: str,
    database_url: str,
    container: Callable[[Path], Container],  # last: its processes stop before the servers do
) -> None:
    image = STARTED[name]
    service = compose["services"][name]
    final = dockerfiles[image][-1]
    port = free_port()

    def local(text: str) -> str:
        # Compose's host names are this machine's servers; fixed ports are free ones here.
        for fixed in ("8000", "8100", "8188"):
            text = text.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{port}")
            text = text.replace(f"--port={fixed}", f"--port={port}")
        return text

    env = {k: v for k, v in final.env().items() if k != "PATH"}
    for key, value in (service.get("environment") or {}).items():
        if value is not None and not key.startswith("OTEL_"):
            env[key] = resolve(str(value), env_example.active)
    env |= {"NATS_URL": nats_url, "DATABASE_URL": database_url}
    if "API_PORT" in env:
        env["API_PORT"] = str(port)

    nc = await nats.connect(nats_url)
    try:
        if name == "persistence":
            # The one-shot step first, as compose orders it: migrations and the stream.
            migrate = container(built(image)).run(compose["services"]["migrate"]["command"], env)
            assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        else:
            await ensure_stream(nc.jetstream())
            if name == "api":
                from taleforge.persistence.migrations import upgrade_to_head_async

                await upgrade_to_head_async(database_url)
    finally:
        await nc.close()

    command = service.get("command") or json.loads(final.all("CMD")[0].args)
    command = [local(resolve(str(word), env_example.active)) for word in command]
    image_check = _check_argv(local(final.all("HEALTHCHECK")[0].args))
    checks = [image_check]
    if "healthcheck" in service:
        checks = [_check_argv([local(str(w)) for w in service["healthcheck"]["test"]])]
    if name == "api":  # the image's liveness check and compose's readiness check
        checks.insert(0, image_check)

    svc = container(built(image))
    svc.start(command, env)
    svc.wait_healthy(checks, env)
