"""Property-based run of schemathesis over the whole OpenAPI document: generated requests to
every operation, against the app served with real NATS and Postgres and a valid (admin)
token, find no 5xx and no response that breaks the documented schema or content type."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import asyncpg
import nats
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from taleforge.api.app import create_app
from taleforge.api.auth import AdminRule, issue_token
from taleforge.api.settings import DEV_JWT_SECRET, Settings
from taleforge.cli.embedded import EmbeddedNats
from taleforge.persistence.adapters.event_log import ensure_stream
from taleforge.persistence.migrations import upgrade_to_head
from taleforge.sandboxes.serving import serve_in_thread
from tests.support import asyncpg_dsn

if TYPE_CHECKING:
    from tests.conftest import PostgresServer

pytestmark = pytest.mark.integration

# Small enough for `make test` (< 60 s on a loaded 2-core machine), large enough that every
# operation sees a spread of valid and edge-case inputs.
EXAMPLES_PER_OPERATION = 5
ADMIN = uuid.uuid4()
TOKEN = issue_token(ADMIN, secret=DEV_JWT_SECRET, extra_claims=AdminRule().claims())


@pytest.fixture(scope="module")
async def module_nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One NATS for every operation's run (a server per operation would cost more than the
    run), with the streams persistence declares."""
    server = None
    url = os.environ.get("TEST_NATS_URL")
    if not url:
        server = EmbeddedNats(tmp_path_factory.mktemp("schemathesis-nats"))
        server.start()
        url = server.url
    nc = await nats.connect(url)
    try:
        await ensure_stream(nc.jetstream())
        yield url
    finally:
        await nc.close()
        if server is not None:
            server.stop()


@pytest.fixture(scope="module")
async def module_database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(asyncpg_dsn(postgres_server.admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = postgres_server.url(name)
        upgrade_to_head(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module")
def served(module_nats_url: str, module_database_url: str) -> Iterator[str]:
    app_settings = Settings(
        nats_url=module_nats_url,
        database_url=module_database_url,
        stream_wait_s=5.0,
        progress_wait_s=0.2,  # a POST that waits for a narrator (there is none) stays short
        rate_limit_per_min=0,  # the run is one player making hundreds of requests
        session_visible_timeout_s=0.2,
    )
    with serve_in_thread(create_app(app_settings)) as url:
        yield url


# The document does not depend on the servers, so it is read from an app built here.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure here is reproducible
)
def test_the_api_keeps_its_openapi_contract(case: schemathesis.Case, served: str) -> None:
    case.call_and_validate(
        base_url=served,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
        # What this test is about: no 5xx, and every response (status, content type,
        # headers, body) as documented. Left out: whether the validators are exactly as
        # strict as the schema says (cross-field rules such as "text may be empty only for
        # continue" cannot be said in it).
        excluded_checks=[checks.positive_data_acceptance, checks.negative_data_rejection],
    )
