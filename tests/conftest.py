"""Shared fixtures: an application over a real SQLite file, driven in-process through httpx."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.config import Settings
from tests.receiver import Receiver

NGSI = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
# CIDADE_PRIVATE_NETWORKS for the tests whose receivers (tests/receiver.py, Mosquitto, context
# servers) listen on loopback, which the server may not reach by default.
LOOPBACK = "127.0.0.0/8"


PG_URL = os.environ.get("CIDADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# CI sets CIDADE_REQUIRE_SERVICES=1: there a test that needs PostgreSQL or Mosquitto fails when
# the service is missing, instead of skipping (a green run with half the tests skipped).
REQUIRE_SERVICES = os.environ.get("CIDADE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def service_missing(reason: str) -> NoReturn:
    """A service this test needs (PostgreSQL, Mosquitto) is missing: skip, saying why, or
    fail where CIDADE_REQUIRE_SERVICES is set."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CIDADE_REQUIRE_SERVICES is set: CI needs every service)")
    pytest.skip(reason)


@functools.cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can (asked once per process)."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            # The store's migration lock: test workers starting together on a database without
            # PostGIS would otherwise race to create it, and the loser would skip every test.
            from cidade.store.postgres.migrations import MIGRATION_LOCK

            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # any failure to reach it is a reason to skip, printed
        return f"PostgreSQL with PostGIS not usable at {PG_URL}: {exc}"
    return None


def drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@contextlib.contextmanager
def running_store(kind: str, folder: Path) -> Iterator[tuple[Any, asyncio.AbstractEventLoop]]:
    """An opened store of either kind with the event loop that drives it (store-level tests);
    a PostgreSQL one lives in a schema of its own, dropped afterwards."""
    schema = None
    if kind == "sqlite":
        from cidade.store.sqlite import SqliteStore

        backend: Any = SqliteStore(str(folder / "store.db"))
    else:
        from cidade.store.postgres import PostgresStore

        reason = postgres_unavailable()
        if reason:
            service_missing(reason)
        schema = f"s_{uuid.uuid4().hex[:12]}"
        backend = PostgresStore(f"{PG_URL}?schema={schema}")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(backend.open())
    try:
        yield backend, loop
    finally:
        loop.run_until_complete(backend.close())
        loop.close()
        if schema:
            drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every API test runs on both stores; PostgreSQL ones skip, saying why, when it is absent."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cidade.db"
        return
    reason = postgres_unavailable()
    if reason:
        service_missing(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    drop_schema(schema)


def make_settings(**values: Any) -> Settings:
    """Settings for tests: access control on, as in production, but no rate limit (a test
    sends thousands of requests as one principal)."""
    values.setdefault("rate_limit", 0)
    return Settings(**values)


def notifying_settings(store_url: str, **values: Any) -> Settings:
    """Settings for tests that deliver notifications to a receiver on loopback: the notifier
    polls every 0.2 s, and loopback is allowed as a deployment would allow its own network
    (CIDADE_PRIVATE_NETWORKS)."""
    return make_settings(
        store=store_url, notification_poll=0.2, private_networks=LOOPBACK, **values
    )


async def _platform_admin_key(app: Any) -> str:
    from cidade.auth.principal import EVERY_TENANT, Principal

    accounts = app.state.accounts
    cli = Principal(
        subject="test", kind="account", roles=frozenset({"admin"}), tenants=frozenset({"*"})
    )
    if await accounts.store.get_account("test-admin") is None:
        await accounts.create(cli, "test-admin", roles=["admin"], tenants=[EVERY_TENANT])
    admin = Principal(
        subject="account:test-admin",
        kind="account",
        roles=frozenset({"admin"}),
        tenants=frozenset({EVERY_TENANT}),
        account="test-admin",
    )
    token, _ = await accounts.create_key(admin, {"label": "tests"})
    return token


@contextlib.contextmanager
def admin_client(app: Any, **options: Any) -> Iterator[TestClient]:
    """A client of ``app`` that authenticates as a platform administrator (an API key of an
    account with role admin in every tenant), through the real gate."""
    with TestClient(app, **options) as c:
        c.headers["Authorization"] = f"Bearer {c.portal.call(_platform_admin_key, app)}"
        yield c


@pytest.fixture
def settings(store_url: str) -> Settings:
    return make_settings(store=store_url, max_page_size=1000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(build_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP notification receiver on loopback (tests/receiver.py)."""
    r = Receiver()
    yield r
    r.close()


def problem_type(response) -> str:
    """The NGSI-LD error type of a ProblemDetails response (without the URI prefix)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/"), body
    assert body["title"]
    return body["type"].removeprefix("https://uri.etsi.org/ngsi-ld/errors/")
