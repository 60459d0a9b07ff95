"""docker-compose.yml, checked by reading it: builds, settings, healthchecks, ordering, .env."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Standard OpenTelemetry SDK variables (OTEL_*): read by the SDK, not by a Settings class.
OTEL_PREFIX = "OTEL_"
# Distroless images: no shell or client to probe with. Nothing waits on them being healthy.
NO_HEALTHCHECK = {"otel-collector", "jaeger"}
# Infrastructure settings whose defaults only work on a developer's machine.
LOCAL_DEFAULT = re.compile(r"127\.0\.0\.1|localhost")


def referenced_variables(text: str) -> set[str]:
    """Every ${NAME} compose interpolates, nested ones included."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def test_every_build_context_and_dockerfile_exists(compose: dict[str, Any]) -> None:
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert {"api", "narrator", "illustrator", "persistence", "migrate"} <= set(built)
    for name, build in built.items():
        context = ROOT / build["context"]
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"


def test_services_set_only_settings_they_read(
    compose_env: dict[str, dict[str, str | None]], service_settings: dict[str, Any]
) -> None:
    for name, settings in service_settings.items():
        accepted = set().union(*(s.accepted for s in settings.values()))
        unknown = {env for env in compose_env[name] if not env.startswith(OTEL_PREFIX)} - accepted
        assert not unknown, f"{name} sets variables its Settings never read: {sorted(unknown)}"


def test_every_setting_is_settable_from_env_file(
    compose_env: dict[str, dict[str, str | None]], service_settings: dict[str, Any]
) -> None:
    # An entry with no value passes the variable from .env through, so every setting a
    # service reads can be changed without editing docker-compose.yml.
    for name, settings in service_settings.items():
        missing = set(settings) - set(compose_env[name])
        assert not missing, (
            f"docker-compose.yml: add to {name}'s environment (as `NAME:` to pass it through "
            f"from .env) and document in .env.example: {sorted(missing)}"
        )


def test_required_and_machine_local_settings_have_container_values(
    compose_env: dict[str, dict[str, str | None]],
    service_settings: dict[str, Any],
    dockerfiles: dict[str, Any],
) -> None:
    for name, settings in service_settings.items():
        image = "persistence" if name == "migrate" else name
        image_env = dockerfiles[image][-1].env()
        for env, setting in settings.items():
            default = setting.default_text
            needs_value = setting.required or bool(LOCAL_DEFAULT.search(default or ""))
            given = compose_env[name].get(env) or image_env.get(env)
            if needs_value:
                assert given, f"{name}: {env} needs a value in a container (default {default!r})"
                assert not LOCAL_DEFAULT.search(given), f"{name}: {env}={given} is machine-local"


def test_long_running_services_have_healthchecks(
    compose: dict[str, Any], dockerfiles: dict[str, Any]
) -> None:
    for name, svc in compose["services"].items():
        if name in NO_HEALTHCHECK or svc.get("restart") == "no":
            continue
        check = svc.get("healthcheck")
        assert not (check or {}).get("disable"), f"{name}: healthcheck disabled"
        image_check = False
        if "build" in svc:
            image = Path(svc["build"]["dockerfile"]).parent.name  # api, ..., sandboxes
            image_check = bool(dockerfiles[image][-1].all("HEALTHCHECK"))
        assert check or image_check, f"{name}: no healthcheck in compose nor in its image"


def test_start_order_waits_for_health_and_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            assert name in NO_HEALTHCHECK, f"{name}: depends_on needs conditions"
            continue
        for dependency, how in depends.items():
            if services[dependency].get("restart") == "no":
                assert how["condition"] == "service_completed_successfully", (name, dependency)
            else:
                assert how["condition"] == "service_healthy", (name, dependency)
    for name in ("persistence", "api", "narrator", "illustrator"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert services["migrate"]["command"] == ["python", "-m", "taleforge.persistence", "migrate"]
    assert services["persistence"]["environment"]["PERSISTENCE_MIGRATE_ON_START"] == "false"
    for name in ("migrate", "api", "persistence"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_env_example_documents_every_variable(
    compose_text: str, compose_env: dict[str, dict[str, str | None]], env_example: Any
) -> None:
    used = referenced_variables(compose_text)
    used |= {key for env in compose_env.values() for key, value in env.items() if value is None}
    undocumented = used - set(env_example.documented)
    assert not undocumented, f".env.example: document {sorted(undocumented)}"
    # COMPOSE_PROFILES is compose's own; anything else documented must be used somewhere.
    stale = set(env_example.documented) - used - {"COMPOSE_PROFILES"}
    assert not stale, f".env.example documents variables nothing reads: {sorted(stale)}"


def test_env_example_shows_the_defaults_that_apply(
    compose_text: str,
    compose_env: dict[str, dict[str, str | None]],
    service_settings: dict[str, Any],
    env_example: Any,
) -> None:
    applies: dict[str, str] = {}
    # Compose's own defaults: ${NAME:-default} (innermost ones; outer ones come below).
    for match in re.finditer(r"\$\{([A-Z0-9_]+):-([^{}]*)\}", compose_text):
        applies[match.group(1)] = match.group(2)
    for name, settings in service_settings.items():
        for key, value in compose_env[name].items():
            if value is None and key in settings:
                default = settings[key].default_text  # passed through: the Settings default
                if default is not None:
                    applies[key] = default
            elif value is not None and (outer := re.fullmatch(rf"\$\{{{key}:-(.*)\}}", value)):
                applies[key] = outer.group(1)
    wrong = {
        key: (env_example.documented[key], default)
        for key, default in applies.items()
        if key in env_example.documented
        and key not in env_example.active
        and env_example.documented[key] != default
    }
    assert not wrong, f".env.example: documented vs applying defaults: {wrong}"


def test_postgres_is_supabase_and_illustrator_scales_alone(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("${POSTGRES_IMAGE:-supabase/postgres:15.")
    assert services["illustrator"]["deploy"]["replicas"] == "${ILLUSTRATOR_REPLICAS:-1}"


def test_gpu_profile_reserves_a_gpu_for_comfyui(compose: dict[str, Any]) -> None:
    services = compose["services"]
    comfyui = services["comfyui"]
    assert comfyui["profiles"] == ["gpu"]
    (device,) = comfyui["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # Without the profile the illustrator renders on the sandbox and does not wait for it.
    assert services["illustrator"]["environment"]["COMFYUI_URL"].endswith("comfyui-sandbox:8188}")
    assert services["illustrator"]["depends_on"]["comfyui"]["required"] is False
    assert "COMFYUI_URL=http://comfyui:8188" in (ROOT / "Makefile").read_text()


def test_cluster_profile_is_three_routed_nats_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = ["nats", "nats-2", "nats-3"]
    assert [services[n].get("profiles") for n in nodes] == [None, ["cluster"], ["cluster"]]
    cluster_conf = (ROOT / "deploy/nats/cluster.conf").read_text()
    for node in nodes:
        assert services[node]["environment"]["NATS_SERVER_NAME"] == node
        assert f"nats-route://{node}:6222" in cluster_conf
        assert services[node]["command"] == ["--config", "/etc/nats/${NATS_CONFIG:-single}.conf"]
    makefile = (ROOT / "Makefile").read_text()
    assert "NATS_CONFIG=cluster STREAM_REPLICAS=3" in makefile


@pytest.mark.parametrize("config", ["single", "cluster"])
def test_nats_configs_are_valid(config: str) -> None:
    from taleforge.cli.embedded import nats_server_binary

    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(ROOT / f"deploy/nats/{config}.conf")],
        capture_output=True,
        text=True,
        env={"NATS_SERVER_NAME": "nats-2", "PATH": str(Path(sys.executable).parent)},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout
