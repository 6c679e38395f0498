"""Access control through the HTTP API: log-in and sessions, keys, accounts, tenants, public
types, devices, limits and the audit trail, on a real store through the real gate."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from tests.auth.helpers import PASSWORD, account_with_key, bearer, key_of
from tests.conftest import NGSI, make_settings, problem_type
from tests.hub.helpers import entity


@pytest.fixture
def make_client(tmp_path) -> Iterator[Any]:
    opened: list[TestClient] = []

    def make(store_url: str | None = None, **values: Any) -> TestClient:
        settings = make_settings(store=store_url or f"sqlite:///{tmp_path}/a.db", **values)
        client = TestClient(build_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def call(client: TestClient, fn: Any, *args: Any, **kw: Any) -> Any:
    return client.portal.call(lambda: fn(client.app, *args, **kw))


def audit(
    client: TestClient, admin: str, as_tenant: str | None = None, **params: str
) -> list[dict[str, Any]]:
    response = client.get("/auth/audit", params=params, headers=bearer(admin, as_tenant))
    assert response.status_code == 200, response.text
    return response.json()


def login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    return client.post("/auth/login", json={"name": name, "password": password})


# -- log-in, sessions, CSRF -----------------------------------------------------------------------


def test_login_sets_a_safe_session_cookie_and_me_tells_who(client):
    call(client, account_with_key, "ana", ["operator"], ["city"])
    response = login(client, "ana")
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    assert "cidade_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # served over plain HTTP in this test
    body = response.json()
    assert body["roles"] == ["operator"] and body["csrfToken"]
    me = client.get("/auth/me").json()
    assert me["subject"] == "account:ana" and me["tenants"] == ["city"]
    assert "entities.write" in me["permissions"] and "audit.read" not in me["permissions"]


def test_session_cookie_is_secure_behind_https(make_client):
    client = make_client(public_url="https://cidade.example.org")
    call(client, account_with_key, "ana", ["operator"], [""])
    assert "Secure" in login(client, "ana").headers["set-cookie"]


def test_cookie_authenticated_writes_need_the_csrf_token(client):
    call(client, account_with_key, "ana", ["operator"], [""])
    csrf = login(client, "ana").json()["csrfToken"]
    body = entity("urn:ngsi-ld:Building:b1")
    refused = client.post(f"{NGSI}/entities", json=body)
    assert refused.status_code == 403 and problem_type(refused) == "AccessDenied"
    wrong = client.post(f"{NGSI}/entities", json=body, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:b1").status_code == 404
    ok = client.post(f"{NGSI}/entities", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    # Reads need no token.
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:b1").status_code == 200


def test_logout_ends_the_session(client):
    call(client, account_with_key, "ana", ["operator"], [""])
    login(client, "ana")
    cookie = client.cookies.get("cidade_session")
    assert client.post("/auth/logout").status_code == 204
    client.cookies.set("cidade_session", cookie)  # a stolen copy of the cookie
    response = client.get(f"{NGSI}/types")
    assert response.status_code == 401 and problem_type(response) == "Unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_login_form_is_protected_by_a_double_submit_token(client):
    call(client, account_with_key, "ana", ["staff"], [""])
    page = client.get("/auth/login?next=//evil.example/x")
    assert page.status_code == 200 and "csrf_token" in page.text
    assert "evil.example" not in page.text  # no open redirect
    token = client.cookies.get("cidade_login_csrf")
    form = {"name": "ana", "password": PASSWORD, "next": "/ops"}
    forged = client.post("/auth/login", data={**form, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert client.cookies.get("cidade_session") is None
    done = client.post("/auth/login", data={**form, "csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ops"
    assert client.cookies.get("cidade_session")
    client.get("/auth/login")
    token = client.cookies.get("cidade_login_csrf")
    escape = client.post(
        "/auth/login",
        data={**form, "next": "https://evil.example/", "csrf_token": token},
        follow_redirects=False,
    )
    assert escape.headers["location"] == "/"


def test_failed_logins_are_audited_without_secrets_then_locked(client, caplog):
    caplog.set_level(logging.DEBUG)
    admin = call(client, account_with_key, "root", ["admin"], ["*"])
    call(client, account_with_key, "ana", ["staff"], [""])
    for _ in range(5):
        response = login(client, "ana", "wrong password 1")
        assert response.status_code == 401 and problem_type(response) == "Unauthenticated"
    assert login(client, "nobody-here", "typed-my-password-here").status_code == 401
    locked = login(client, "ana")  # the right password, too late
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    failed = audit(client, admin, event="login.failed")
    assert len(failed) == 7
    assert sum(e["target"] == "account:ana" for e in failed) == 6
    # An unknown name is not recorded: it may be a password typed in the wrong field.
    assert any(e["target"] == "" for e in failed)
    everything = str(audit(client, admin, limit="1000"))
    for secret in ("wrong password 1", "typed-my-password-here", "nobody-here", PASSWORD, admin):
        assert secret not in everything
    # The application log holds neither secrets nor names.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "audit event login.failed" in logged
    for secret in (
        "wrong password 1",
        "typed-my-password-here",
        "nobody-here",
        PASSWORD,
        admin,
        "ana",
    ):
        assert secret not in logged


def test_change_own_password(client):
    call(client, account_with_key, "ana", ["staff"], [""])
    csrf = login(client, "ana").json()["csrfToken"]
    bad = client.post(
        "/auth/me/password",
        json={"currentPassword": "not it at all", "newPassword": "a new long password"},
        headers={"X-CSRF-Token": csrf},
    )
    assert bad.status_code == 400
    ok = client.post(
        "/auth/me/password",
        json={"currentPassword": PASSWORD, "newPassword": "a new long password"},
        headers={"X-CSRF-Token": csrf},
    )
    assert ok.status_code == 204
    assert login(client, "ana").status_code == 401
    assert login(client, "ana", "a new long password").status_code == 200


# -- API keys -------------------------------------------------------------------------------------


def test_keys_are_shown_once_stored_hashed_and_revocable(client):
    token = call(client, account_with_key, "ana", ["operator"], [""])
    created = client.post("/auth/keys", json={"label": "script"}, headers=bearer(token))
    assert created.status_code == 201
    new = created.json()["key"]
    key_id = created.json()["id"]
    assert created.headers["location"] == f"/auth/keys/{key_id}"
    assert new.startswith("cdk_") and "secret_hash" not in created.json()
    listed = client.get("/auth/keys", headers=bearer(new)).json()
    assert {k["id"] for k in listed} >= {key_id} and all("key" not in k for k in listed)
    stored = client.portal.call(client.app.state.store.get_api_key, key_id)
    assert new.split("_", 2)[2] not in str(stored)  # only a hash of the secret is kept
    assert client.get(f"{NGSI}/types", headers=bearer(new)).status_code == 200
    assert client.delete(f"/auth/keys/{key_id}", headers=bearer(token)).status_code == 204
    revoked = client.get(f"{NGSI}/types", headers=bearer(new))
    assert revoked.status_code == 401
    # Someone else's key is "not found".
    other = call(client, account_with_key, "bea", ["operator"], [""])
    mine = client.post("/auth/keys", json={}, headers=bearer(other)).json()["id"]
    assert client.delete(f"/auth/keys/{mine}", headers=bearer(token)).status_code == 404


def test_key_scope_expiry_and_bad_requests(client):
    token = call(client, account_with_key, "ana", ["operator"], [""])
    reader = client.post(
        "/auth/keys", json={"scope": ["entities.read"]}, headers=bearer(token)
    ).json()["key"]
    assert client.get(f"{NGSI}/entities?type=Building", headers=bearer(reader)).status_code == 200
    denied = client.post(
        f"{NGSI}/entities", json=entity("urn:ngsi-ld:Building:x"), headers=bearer(reader)
    )
    assert denied.status_code == 403 and problem_type(denied) == "AccessDenied"
    for spec, why in [
        ({"roles": ["admin"]}, "roles its owner does not have"),
        ({"tenants": ["elsewhere"]}, "tenants"),
        ({"scope": ["audit.read"]}, "scope"),
        ({"expires": "2001-01-01T00:00:00Z"}, "past"),
        ({"roles": ["device"]}, "entities"),
        ({"colour": "red"}, "unknown"),
    ]:
        response = client.post("/auth/keys", json=spec, headers=bearer(token))
        assert response.status_code == 400, spec
        assert why in response.json()["detail"], response.json()
    assert len(client.get("/auth/keys", headers=bearer(token)).json()) == 2
    malformed = client.get(f"{NGSI}/types", headers=bearer("cdk_0123456789abcdef_short"))
    assert malformed.status_code == 401


def test_a_key_loses_what_its_owner_loses(client):
    admin = call(client, account_with_key, "root", ["admin"], ["*"])
    token = call(client, account_with_key, "ana", ["operator"], [""])
    assert client.get(f"{NGSI}/types", headers=bearer(token)).status_code == 200
    changed = client.patch("/auth/accounts/ana", json={"roles": ["citizen"]}, headers=bearer(admin))
    assert changed.status_code == 200 and changed.json()["roles"] == ["citizen"]
    assert client.get(f"{NGSI}/types", headers=bearer(token)).status_code == 403
    [change] = audit(client, admin, event="account.changed")
    assert change["detail"]["before"]["roles"] == ["operator"]
    assert change["detail"]["after"]["roles"] == ["citizen"]
    client.patch("/auth/accounts/ana", json={"disabled": True}, headers=bearer(admin))
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401
    assert login(client, "ana").status_code == 401


# -- accounts -------------------------------------------------------------------------------------


def test_accounts_api_and_tenant_administrators(client):
    root = call(client, account_with_key, "root", ["admin"], ["*"])
    lisbon = call(client, account_with_key, "lis-admin", ["admin"], ["lisboa"])
    made = client.post(
        "/auth/accounts",
        json={
            "name": "op1",
            "password": "long enough pw",
            "roles": ["operator"],
            "tenants": ["lisboa"],
        },
        headers=bearer(lisbon, "lisboa"),
    )
    assert made.status_code == 201 and made.headers["location"] == "/auth/accounts/op1"
    assert "password_hash" not in made.json()
    assert (
        client.post(
            "/auth/accounts", json={"name": "op1", "roles": []}, headers=bearer(lisbon, "lisboa")
        ).status_code
        == 400
    )
    for body in [
        {"name": "x1", "roles": ["superuser"]},
        {"name": "x2", "roles": ["admin"], "tenants": ["porto"]},
        {"name": "x3", "roles": [], "tenants": ["*"]},
        {"name": "Bad Name", "roles": []},
        {"name": "x4", "roles": [], "password": "short"},
        {"name": "x5", "roles": [], "shoe": 42},
    ]:
        response = client.post("/auth/accounts", json=body, headers=bearer(lisbon, "lisboa"))
        assert response.status_code == 400, body
    # The Lisbon administrator does not see, nor learn of, Porto's accounts.
    call(client, account_with_key, "porto-op", ["operator"], ["porto"])
    names = {
        a["name"] for a in client.get("/auth/accounts", headers=bearer(lisbon, "lisboa")).json()
    }
    assert "porto-op" not in names and "op1" in names
    hidden = client.get("/auth/accounts/porto-op", headers=bearer(lisbon, "lisboa"))
    absent = client.get("/auth/accounts/never-was", headers=bearer(lisbon, "lisboa"))
    assert hidden.status_code == absent.status_code == 404
    assert (
        client.patch(
            "/auth/accounts/porto-op", json={"roles": []}, headers=bearer(lisbon, "lisboa")
        ).status_code
        == 404
    )
    # Deleting an account revokes its keys.
    op_key = call(client, key_of, "porto-op")
    assert client.get("/auth/keys", headers=bearer(op_key, "porto")).status_code == 200
    assert client.delete("/auth/accounts/porto-op", headers=bearer(root)).status_code == 204
    assert client.get("/auth/keys", headers=bearer(op_key, "porto")).status_code == 401
    assert {e["event"] for e in audit(client, root)} >= {
        "account.created",
        "account.deleted",
        "key.created",
        "key.revoked",
    }


def test_audit_log_is_per_tenant_and_paged(client):
    root = call(client, account_with_key, "root", ["admin"], ["*"])
    lisbon = call(client, account_with_key, "lis-admin", ["admin"], ["lisboa"])
    porto = call(client, account_with_key, "porto-op", ["operator"], ["porto"])
    for _ in range(3):
        client.get(f"{NGSI}/subscriptions", headers=bearer(porto, "lisboa"))  # denied
    client.get(f"{NGSI}/subscriptions", headers=bearer(porto, "porto"))  # fine
    seen = audit(client, lisbon, "lisboa", event="access.denied")
    assert len(seen) == 3 and all(e["tenant"] == "lisboa" for e in seen)
    assert all(e["actor"].startswith("key:") for e in seen)
    assert audit(client, lisbon, "lisboa", tenant="porto") == []
    page = client.get("/auth/audit?limit=2", headers=bearer(root))
    assert len(page.json()) == 2 and 'rel="next"' in page.headers["link"]
    nxt = page.headers["link"].split(">")[0].lstrip("<")
    rest = client.get(nxt, headers=bearer(root)).json()
    assert rest and rest[0]["seq"] < page.json()[-1]["seq"]
    for params in (
        {"event": "nonsense"},
        {"limit": "0"},
        {"limit": "x"},
        {"since": "yesterday"},
        {"colour": "red"},
    ):
        assert client.get("/auth/audit", params=params, headers=bearer(root)).status_code == 400
    assert client.get("/auth/audit", headers=bearer(porto, "porto")).status_code == 403


# -- tenants, public types, devices ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_nothing_of_one_tenant_is_reachable_from_another(make_client, request, kind):
    store_url = None
    if kind == "postgres":
        store_url = _pg_url(request)
    client = make_client(store_url)
    lisbon = call(client, account_with_key, "lis-op", ["operator"], ["lisboa"])
    porto = call(client, account_with_key, "porto-admin", ["admin"], ["porto"])
    secret = entity("urn:ngsi-ld:Building:hq", name="town hall")
    assert (
        client.post(f"{NGSI}/entities", json=secret, headers=bearer(lisbon, "lisboa")).status_code
        == 201
    )
    # From Porto, Lisbon's entity and a missing one look the same; Lisbon and a tenant that
    # does not exist look the same too.
    answers = []
    for tenant, eid in [
        ("lisboa", "urn:ngsi-ld:Building:hq"),
        ("lisboa", "urn:ngsi-ld:Building:no"),
        ("ghost", "urn:ngsi-ld:Building:hq"),
    ]:
        r = client.get(f"{NGSI}/entities/{eid}", headers=bearer(porto, tenant))
        answers.append((r.status_code, problem_type(r)))
    assert answers == [(403, "AccessDenied")] * 3
    for method, path, body in [
        ("GET", f"{NGSI}/entities?type=Building", None),
        ("POST", f"{NGSI}/entities", entity("urn:ngsi-ld:Building:x")),
        ("DELETE", f"{NGSI}/entities/urn:ngsi-ld:Building:hq", None),
        ("GET", f"{NGSI}/types", None),
        ("GET", f"{NGSI}/subscriptions", None),
        ("GET", f"{NGSI}/temporal/entities/urn:ngsi-ld:Building:hq", None),
    ]:
        r = client.request(method, path, json=body, headers=bearer(porto, "lisboa"))
        assert r.status_code == 403, (method, path, r.text)
    # In its own tenant, the same id is free and Lisbon's data is not there.
    assert (
        client.get(
            f"{NGSI}/entities/urn:ngsi-ld:Building:hq", headers=bearer(porto, "porto")
        ).status_code
        == 404
    )
    still = client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:hq", headers=bearer(lisbon, "lisboa"))
    assert still.json()["name"]["value"] == "town hall"


def _pg_url(request: pytest.FixtureRequest) -> str:
    import uuid

    from tests.conftest import PG_URL, drop_schema, postgres_unavailable, service_missing

    reason = postgres_unavailable()
    if reason:
        service_missing(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: drop_schema(schema))
    return f"{PG_URL}?schema={schema}"


def test_public_types_are_readable_by_anyone_and_nothing_else(make_client):
    client = make_client(public_types="ParkingSpot")
    op = call(client, account_with_key, "op", ["operator"], [""])
    for body in (
        entity("urn:ngsi-ld:ParkingSpot:p1", "ParkingSpot", status="free"),
        entity("urn:ngsi-ld:Building:b1", "Building", owner="someone"),
    ):
        assert client.post(f"{NGSI}/entities", json=body, headers=bearer(op)).status_code == 201
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:ParkingSpot:p1").status_code == 200
    hidden = client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:b1")
    assert hidden.status_code == 404  # as if it did not exist
    assert [e["id"] for e in client.get(f"{NGSI}/entities?type=ParkingSpot,Building").json()] == [
        "urn:ngsi-ld:ParkingSpot:p1"
    ]
    assert client.get(f"{NGSI}/entities?type=Building").json() == []
    assert [e["id"] for e in client.get(f"{NGSI}/entities?q=status==%22free%22").json()] == [
        "urn:ngsi-ld:ParkingSpot:p1"
    ]
    query = {"type": "Query", "entities": [{"type": "Building"}]}
    assert client.post(f"{NGSI}/entityOperations/query", json=query).json() == []
    write = client.post(
        f"{NGSI}/entities", json=entity("urn:ngsi-ld:ParkingSpot:p2", "ParkingSpot")
    )
    assert write.status_code == 401 and problem_type(write) == "Unauthenticated"


def test_the_public_discovers_the_public_types_and_nothing_else(make_client, store_url):
    """The demo's promise: the city's (public) types are read without logging in. Discovery
    then names those types and their attributes only, and no count that other types make."""
    client = make_client(store_url, public_types="ParkingSpot")
    op = call(client, account_with_key, "op", ["operator"], [""])
    citizen = call(client, account_with_key, "cid", ["citizen"], [""])
    for body in (
        entity("urn:ngsi-ld:ParkingSpot:p1", "ParkingSpot", status="free", name="P1"),
        entity("urn:ngsi-ld:Building:b1", "Building", owner="someone", name="B1"),
    ):
        assert client.post(f"{NGSI}/entities", json=body, headers=bearer(op)).status_code == 201
    for headers in ({}, bearer(citizen)):
        types = client.get(f"{NGSI}/types", headers=headers)
        assert types.status_code == 200, types.text
        assert types.json()["typeList"] == ["ParkingSpot"]
        detailed = client.get(f"{NGSI}/types?details=true", headers=headers).json()
        assert [(t["typeName"], t["attributeNames"]) for t in detailed] == [
            ("ParkingSpot", ["name", "status"])
        ]
        info = client.get(f"{NGSI}/types/ParkingSpot", headers=headers).json()
        assert info["entityCount"] == 1
        assert client.get(f"{NGSI}/types/Building", headers=headers).status_code == 404
        attrs = client.get(f"{NGSI}/attributes", headers=headers).json()["attributeList"]
        assert attrs == ["name", "status"]
        named = client.get(f"{NGSI}/attributes/name", headers=headers).json()
        assert named["typeNames"] == ["ParkingSpot"] and "attributeCount" not in named
        assert client.get(f"{NGSI}/attributes/owner", headers=headers).status_code == 404
        details = client.get(f"{NGSI}/attributes?details=true", headers=headers).json()
        assert {a["attributeName"] for a in details} == {"name", "status"}
    # Those who read everything still see everything, with counts.
    everything = client.get(f"{NGSI}/types", headers=bearer(op)).json()["typeList"]
    assert sorted(everything) == ["Building", "ParkingSpot"]
    named = client.get(f"{NGSI}/attributes/name", headers=bearer(op)).json()
    assert named["typeNames"] == ["Building", "ParkingSpot"] and named["attributeCount"] == 2


def test_without_public_types_the_public_must_log_in(client):
    response = client.get(f"{NGSI}/entities?type=Building")
    assert response.status_code == 401 and problem_type(response) == "Unauthenticated"
    response = client.get(f"{NGSI}/types")
    assert response.status_code == 401 and problem_type(response) == "Unauthenticated"


def test_a_device_writes_and_reads_only_its_own_entities(client):
    op = call(client, account_with_key, "op", ["operator"], [""])
    created = client.post(
        "/auth/keys",
        json={
            "roles": ["device"],
            "entities": ["urn:ngsi-ld:Streetlight:s1", "urn:ngsi-ld:WasteContainer:zone9-*"],
        },
        headers=bearer(op),
    )
    assert created.status_code == 201, created.text
    device = created.json()["key"]
    mine = entity("urn:ngsi-ld:Streetlight:s1", "Streetlight", status="ok")
    theirs = entity("urn:ngsi-ld:Streetlight:s2", "Streetlight", status="ok")
    assert client.post(f"{NGSI}/entities", json=mine, headers=bearer(device)).status_code == 201
    assert client.post(f"{NGSI}/entities", json=theirs, headers=bearer(op)).status_code == 201
    refused = client.patch(
        f"{NGSI}/entities/urn:ngsi-ld:Streetlight:s2/attrs",
        json={"status": {"type": "Property", "value": "broken"}},
        headers=bearer(device),
    )
    assert refused.status_code == 403
    batch = [
        entity("urn:ngsi-ld:WasteContainer:zone9-1", "WasteContainer", fill=0.4),
        entity("urn:ngsi-ld:WasteContainer:zone1-1", "WasteContainer", fill=0.9),
    ]
    assert (
        client.post(
            f"{NGSI}/entityOperations/upsert", json=batch, headers=bearer(device)
        ).status_code
        == 403
    )
    # Nothing of the refused batch was written.
    assert (
        client.get(
            f"{NGSI}/entities/urn:ngsi-ld:WasteContainer:zone9-1", headers=bearer(op)
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"{NGSI}/entityOperations/upsert", json=batch[:1], headers=bearer(device)
        ).status_code
        == 201
    )
    assert (
        client.get(
            f"{NGSI}/entities/urn:ngsi-ld:Streetlight:s2", headers=bearer(device)
        ).status_code
        == 404
    )
    seen = client.get(f"{NGSI}/entities?type=Streetlight,WasteContainer", headers=bearer(device))
    assert sorted(e["id"] for e in seen.json()) == [
        "urn:ngsi-ld:Streetlight:s1",
        "urn:ngsi-ld:WasteContainer:zone9-1",
    ]
    r = client.get(f"{NGSI}/entities?type=Streetlight&idPattern=.*", headers=bearer(device))
    assert r.status_code == 403
    status = client.get(f"{NGSI}/entities/urn:ngsi-ld:Streetlight:s2", headers=bearer(op))
    assert status.json()["status"]["value"] == "ok"


# -- limits ---------------------------------------------------------------------------------------


def test_rate_limits_answer_429_with_retry_after(make_client):
    client = make_client(rate_limit=3, rate_limit_anonymous=2)
    op = call(client, account_with_key, "op", ["operator"], [""])
    codes = [client.get(f"{NGSI}/types", headers=bearer(op)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get(f"{NGSI}/types", headers=bearer(op))
    assert int(limited.headers["retry-after"]) >= 1 and problem_type(limited) == "TooManyRequests"
    # Another principal has a bucket of its own; the public one per address.
    other = call(client, account_with_key, "op2", ["operator"], [""])
    assert client.get(f"{NGSI}/types", headers=bearer(other)).status_code == 200
    public = [client.get("/health").status_code for _ in range(3)]
    assert public == [200, 200, 429]


def test_body_size_is_capped_on_every_api(make_client):
    client = make_client(max_body_bytes=200)
    op = call(client, account_with_key, "op", ["operator"], [""])
    big = {"label": "x" * 500}
    assert client.post("/auth/keys", json=big, headers=bearer(op)).status_code == 413
    assert client.post("/auth/login", json={"name": "x" * 500, "password": "y"}).status_code == 413
    assert (
        client.post(
            f"{NGSI}/entities", json=entity("urn:ngsi-ld:B:1", note="x" * 500), headers=bearer(op)
        ).status_code
        == 413
    )


def test_page_size_is_capped(make_client):
    client = make_client(max_page_size=50)
    op = call(client, account_with_key, "op", ["operator"], [""])
    response = client.get(f"{NGSI}/entities?type=Building&limit=51", headers=bearer(op))
    assert response.status_code == 403 and problem_type(response) == "TooManyResults"


# -- development mode -----------------------------------------------------------------------------


def test_access_control_off_says_so_loudly(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="cidade"):
        client = make_client(auth=False)
    assert any("ACCESS CONTROL IS OFF" in r.getMessage() for r in caplog.records)
    assert client.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:B:1")).status_code == 201


def test_staff_see_and_change_only_their_own_subscriptions(client):
    ana = call(client, account_with_key, "ana", ["staff"], [""])
    rui = call(client, account_with_key, "rui", ["staff"], [""])
    op = call(client, account_with_key, "op", ["operator"], [""])

    def subscribe(token: str, n: int) -> str:
        sub = {
            "id": f"urn:ngsi-ld:Subscription:s{n}",
            "type": "Subscription",
            "entities": [{"type": "WasteContainer"}],
            "notification": {"endpoint": {"uri": "http://notify.example.org/n"}},
        }
        r = client.post(f"{NGSI}/subscriptions", json=sub, headers=bearer(token))
        assert r.status_code == 201, r.text
        return sub["id"]

    mine = subscribe(ana, 1)
    theirs = subscribe(rui, 2)
    subscribe(op, 3)
    listed = client.get(f"{NGSI}/subscriptions?count=true", headers=bearer(ana))
    assert [s["id"] for s in listed.json()] == [mine]
    assert listed.headers["ngsild-results-count"] == "1"
    assert "_owner" not in str(listed.json())
    for method in ("GET", "PATCH", "DELETE"):
        body = {"description": "mine now"} if method == "PATCH" else None
        r = client.request(method, f"{NGSI}/subscriptions/{theirs}", json=body, headers=bearer(ana))
        assert r.status_code == 404, (method, r.text)
    assert (
        client.patch(
            f"{NGSI}/subscriptions/{mine}", json={"description": "bins"}, headers=bearer(ana)
        ).status_code
        == 204
    )
    everything = client.get(f"{NGSI}/subscriptions", headers=bearer(op)).json()
    assert len(everything) == 3
    assert client.delete(f"{NGSI}/subscriptions/{theirs}", headers=bearer(op)).status_code == 204
    # The update kept the owner: still Ana's.
    assert client.get(f"{NGSI}/subscriptions/{mine}", headers=bearer(ana)).status_code == 200


def test_a_new_platform_says_how_to_make_the_first_administrator(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="cidade"):
        make_client()
    assert any("cidade user add" in r.getMessage() for r in caplog.records)


def test_every_way_of_presenting_a_key(client):
    token = call(client, account_with_key, "ana", ["operator"], [""])
    for headers in (
        {"Authorization": f"Bearer {token}"},
        {"X-API-Key": token},
        {"Authorization": token},  # as CKAN clients send their API token
    ):
        assert client.get(f"{NGSI}/types", headers=headers).status_code == 200, headers
    for headers in (
        {"Authorization": "Basic YW5hOnNlY3JldA=="},
        {"Authorization": "Bearer not-a-key"},
        {"X-API-Key": token[:-2] + "xx"},
    ):
        refused = client.get(f"{NGSI}/types", headers=headers)
        assert refused.status_code == 401 and problem_type(refused) == "Unauthenticated", headers


def test_fiware_service_names_the_tenant_handlers_act_in(client):
    lisbon = call(client, account_with_key, "lis-op", ["operator"], ["lisboa"])
    root = call(client, account_with_key, "root", ["admin"], ["*"])
    made = client.post(
        f"{NGSI}/entities",
        json=entity("urn:ngsi-ld:Building:fs1"),
        headers={"Authorization": f"Bearer {lisbon}", "Fiware-Service": "lisboa"},
    )
    assert made.status_code == 201, made.text
    # Written where the gate authorised it, not in the default tenant.
    assert (
        client.get(
            f"{NGSI}/entities/urn:ngsi-ld:Building:fs1", headers=bearer(root, "lisboa")
        ).status_code
        == 200
    )
    assert (
        client.get(f"{NGSI}/entities/urn:ngsi-ld:Building:fs1", headers=bearer(root)).status_code
        == 404
    )
