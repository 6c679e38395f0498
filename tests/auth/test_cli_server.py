"""The first administrator from the command line, then a real server with access control on."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.hub.helpers import entity
from tests.test_server import free_port, start, stop

pytestmark = pytest.mark.server
NGSI = "/ngsi-ld/v1"


def cidade(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cidade.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_first_admin_from_the_cli_then_a_guarded_server(tmp_path):
    store = f"sqlite:///{tmp_path}/c.db"
    assert cidade("migrate", "--store", store).returncode == 0
    made = cidade(
        "user",
        "add",
        "root",
        "--role",
        "admin",
        "--tenant",
        "*",
        "--password-stdin",
        "--store",
        store,
        stdin="a long root password\n",
    )
    assert made.returncode == 0, made.stderr
    again = cidade("user", "add", "root", "--role", "admin", "--no-password", "--store", store)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (
        cidade("user", "add", "root", "--no-password", "--if-absent", "--store", store).returncode
        == 0
    )
    wrong = cidade("user", "add", "x", "--role", "emperor", "--no-password", "--store", store)
    assert wrong.returncode == 2 and "unknown role" in wrong.stderr
    weak = cidade("user", "add", "y", "--password-stdin", "--store", store, stdin="short\n")
    assert weak.returncode == 2 and "at least" in weak.stderr
    listed = cidade("user", "list", "--store", store)
    assert "root\tadmin\t*" in listed.stdout
    key = cidade("key", "add", "--owner", "root", "--label", "ops script", "--store", store)
    assert key.returncode == 0, key.stderr
    token = key.stdout.strip().splitlines()[-1]
    assert token.startswith("cdk_")

    port = free_port()
    proc = start(tmp_path / "c.db", port, CIDADE_AUTH="true")
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        body = entity("urn:ngsi-ld:Building:b1")
        assert httpx.post(f"{base}{NGSI}/entities", json=body).status_code == 401
        assert httpx.post(f"{base}{NGSI}/entities", json=body, headers=auth).status_code == 201
        session = httpx.Client(base_url=base)
        logged = session.post(
            "/auth/login", json={"name": "root", "password": "a long root password"}
        )
        assert logged.status_code == 200
        assert session.get(f"{NGSI}/entities/urn:ngsi-ld:Building:b1").status_code == 200
        # Disabled from the command line while the server runs: refused within seconds.
        assert cidade("user", "set", "root", "--disable", "--store", store).returncode == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if httpx.get(f"{base}{NGSI}/types", headers=auth).status_code == 401:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the disabled account's key still works after 20 s")
        assert session.get(f"{NGSI}/types").status_code == 401
    finally:
        stop(proc)
    output = proc.stdout.read().decode()
    assert token not in output and "a long root password" not in output


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_commands_never_make_a_store(kind, tmp_path, monkeypatch, capsys):
    """`key add` or `user ...` on a store that is not there is an error naming it, and leaves
    nothing behind (it used to make an empty cidade.db, then fail for want of an account);
    only serve, demo and migrate make a store."""
    import asyncio
    import uuid

    import asyncpg

    from cidade.cli import main
    from tests.conftest import PG_URL, drop_schema, postgres_unavailable, service_missing

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIDADE_STORE", raising=False)
    if kind == "sqlite":
        assert main(["key", "add", "--owner", "maria"]) == 2
        assert "no store at sqlite:///cidade.db" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []
        store = f"sqlite:///{tmp_path}/var/cidade.db"
        schema = None
    else:
        reason = postgres_unavailable()
        if reason:
            service_missing(reason)
        schema = f"c_{uuid.uuid4().hex[:12]}"
        store = f"{PG_URL}?schema={schema}"

    async def schema_exists() -> bool:
        conn = await asyncpg.connect(PG_URL)
        try:
            found = await conn.fetchval(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1", schema
            )
            return found is not None
        finally:
            await conn.close()

    try:
        for command in (
            ["user", "add", "maria", "--no-password"],
            ["user", "list"],
            ["key", "add", "--owner", "maria"],
        ):
            assert main([*command, "--store", store]) == 2
            err = capsys.readouterr().err
            assert f"no store at {store}" in err and "cidade migrate" in err
        if schema is None:
            assert list(tmp_path.iterdir()) == []
        else:
            assert not asyncio.run(schema_exists())
        # Made on purpose, it is used.
        assert main(["migrate", "--store", store]) == 0
        assert main(["user", "add", "maria", "--no-password", "--store", store]) == 0
        assert main(["key", "add", "--owner", "maria", "--store", store]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1].startswith("cdk_")
    finally:
        if schema is not None:
            drop_schema(schema)
