"""README's configuration tables name exactly the variables the services read."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import settings_of

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "narrator", "illustrator", "persistence")
# Read by developer tools, tests or a library (tiktoken) rather than a service's Settings.
TOOL_VARIABLES = {
    "TALEFORGE_DATA_DIR": "cli/taleforge/cli/main.py",
    "TEST_NATS_URL": "tests/conftest.py",
    "TEST_DATABASE_URL": "tests/conftest.py",
    "TEST_NO_DOCKER": "tests/conftest.py",
    "TIKTOKEN_CACHE_DIR": "services/narrator/taleforge/narrator/tokens.py",
}


def documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") : readme.index("## Running each service")]
    names = set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", section))
    return names - {"INFO"}  # a log level's default value, not a variable


def test_every_setting_is_documented_and_every_documented_one_is_read() -> None:
    read = {name for service in SERVICES for name in settings_of(service)}
    documented = documented_variables()
    assert read - documented == set(), "add these to README's Configuration section"
    assert documented - read == set(TOOL_VARIABLES), "README names variables nothing reads"


def test_tool_variables_appear_where_they_are_used() -> None:
    for name, path in TOOL_VARIABLES.items():
        assert name in (ROOT / path).read_text(), f"{name} no longer appears in {path}"
