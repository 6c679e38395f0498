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
