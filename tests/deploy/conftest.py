"""What the deploy tests read: docker-compose.yml, the Dockerfiles, .env.example and the
services' Settings, parsed without a Docker engine (there is none on our machines)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "narrator", "illustrator", "persistence")
# Every image and its Dockerfile: one per service, one for both sandboxes.
IMAGES = {svc: f"services/{svc}/Dockerfile" for svc in SERVICES} | {
    "sandboxes": "sandboxes/Dockerfile"
}
# Compose services that run our code, and whose Settings read their environment.
SETTINGS_OF = {svc: svc for svc in SERVICES} | {"migrate": "persistence"}


# --- compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    return yaml.safe_load(compose_text)  # type: ignore[no-any-return]


_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^{}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, innermost first."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            missing = not current
        else:
            missing = current is None
        if not missing:
            return current or ""
        if op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op in (":-", "-") else ""

    while _REFERENCE.search(value):
        value = _REFERENCE.sub(one, value)
    return value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Tests taking `image` run once per Dockerfile.
    if "image" in metafunc.fixturenames:
        metafunc.parametrize("image", list(IMAGES))


@pytest.fixture(scope="session")
def resolve() -> Any:
    """`resolve(text, env)`: compose's interpolation of ${...} in text."""
    return interpolate


@pytest.fixture(scope="session")
def compose_env(compose: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Each compose service's environment, as a mapping."""
    return {name: environment_of(svc) for name, svc in compose["services"].items()}


@pytest.fixture(scope="session")
def service_settings() -> dict[str, dict[str, Setting]]:
    """For each compose service that runs our code: the settings its Settings class reads."""
    return {name: settings_of(svc) for name, svc in SETTINGS_OF.items()}


def environment_of(service: dict[str, Any]) -> dict[str, str | None]:
    """A compose service's environment as a mapping (None: passed through by name)."""
    env = service.get("environment") or {}
    assert isinstance(env, dict), "docker-compose.yml: write environment as a mapping"
    return {key: None if value is None else str(value) for key, value in env.items()}


# --- .env.example ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvExample:
    active: dict[str, str]  # NAME=value lines
    documented: dict[str, str]  # NAME=value and "# NAME=value" lines


_ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="session")
def env_example() -> EnvExample:
    active: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            documented[match.group(2)] = match.group(3)
            if not match.group(1):
                active[match.group(2)] = match.group(3)
    return EnvExample(active=active, documented=documented)


# --- Settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    accepted: frozenset[str]  # every name the environment may use for it (upper case)
    info: FieldInfo

    @property
    def required(self) -> bool:
        return self.info.is_required()

    @property
    def default_text(self) -> str | None:
        """A plain default as an env file writes it; None when required, unset or structured."""
        if self.required:
            return None
        value = self.info.get_default(call_default_factory=True)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        return str(value) if isinstance(value, str | int | float | bool) else None


def settings_of(service: str) -> dict[str, Setting]:
    """The env names `taleforge.<service>.settings.Settings` reads, by documented name."""
    cls = importlib.import_module(f"taleforge.{service}.settings").Settings
    prefix = str(cls.model_config.get("env_prefix") or "")
    settings: dict[str, Setting] = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = [choice for choice in alias.choices if isinstance(choice, str)]
        elif isinstance(alias, str):
            names = [alias]
        else:
            names = [prefix + name]
        # Case-insensitive (pydantic-settings' default), so compare upper case.
        settings[names[0].upper()] = Setting(
            accepted=frozenset(n.upper() for n in names), info=info
        )
    return settings


# --- Dockerfiles -------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def copies(self) -> list[tuple[list[str], str, dict[str, str]]]:
        """Each COPY as (sources, destination, flags such as {"from": "build"})."""
        return [copy_sources(i) for i in self.all("COPY")]

    def env(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for instruction in self.all("ENV"):
            merged |= env_pairs(instruction)
        return merged


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif keyword == "ARG" and not stages:
            continue  # global build arguments, before the first FROM
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    """COPY [--flag=value ...] src... dest -> (sources, destination, flags)."""
    words = instruction.args.split()
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return words[:-1], words[-1], flags


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """ENV KEY=value KEY2="value 2" (the KEY=value form only)."""
    import shlex

    return dict(word.split("=", 1) for word in shlex.split(instruction.args))


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Stage]]:
    return {image: parse_dockerfile((ROOT / path).read_text()) for image, path in IMAGES.items()}
