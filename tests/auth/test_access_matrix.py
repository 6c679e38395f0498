"""Every role, the public and a principal of another tenant, against every route and method.

The table below is the specification (docs/security.md says the same in words): it is written
here by hand, not derived from the code's role table, and a route the app serves that is not
in it fails the test, so no route can be added without deciding who may call it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.routing import Route

from cidade.app import build_app
from cidade.auth.accounts import account_principal
from cidade.auth.principal import Principal
from cidade.auth.routes import GuardedRoute
from tests.conftest import make_settings

TENANT = "city"
OWN = "urn:ngsi-ld:Device:own-1"

EVERYONE = {"admin", "operator", "staff", "publisher", "device", "citizen", "anonymous"}
READ = EVERYONE  # narrowed inside: public types for citizen/anonymous, own entities for device
WRITE = {"admin", "operator", "device"}  # device: its own entities only
# Narrowed inside for citizen/anonymous: the public types and their attributes only.
DISCOVER = {"admin", "operator", "staff", "publisher", "citizen", "anonymous"}
HISTORY_READ = {"admin", "operator", "staff", "publisher"}
HISTORY_WRITE = {"admin", "operator"}
SUBSCRIBE = {"admin", "operator", "staff"}
# Registering context sources is the platform's own business; reading and following them is
# as reading subscriptions.
REGISTRATIONS_READ = {"admin", "operator", "staff"}
REGISTRATIONS_WRITE = {"admin", "operator"}
CONTEXT_READ = {"admin", "operator", "staff", "publisher"}
CONTEXT_WRITE = {"admin", "operator"}
OWN_CREDENTIALS = {"admin", "operator", "staff", "publisher", "citizen"}
ADMIN = {"admin"}
DEVICES = {"admin", "operator"}
# Anyone may report a problem, logged in or not; a device or a publisher is not a reporter.
REPORT = {"admin", "operator", "staff", "citizen", "anonymous"}
OCCURRENCES_READ = {"admin", "operator", "staff"}
TRIAGE = {"admin", "operator"}
CONTACT = {"admin", "operator"}
# Open311's POSTs need an API key of an account of the jurisdiction's tenant (never the public
# there); their refusals are Open311's errors (403), not ProblemDetails.
OPEN311_REPORT = {"admin", "operator", "staff", "citizen"}
OPEN311_UPDATE = {"admin", "operator", "staff"}
O311 = "/open311/v2"

N = "/ngsi-ld/v1"
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("/health", "GET"): EVERYONE,
    ("/openapi.json", "GET"): EVERYONE,
    # A device authenticates with its group's apikey in the query, as with the IoT agent.
    ("/iot/json", "POST"): EVERYONE,
    ("/auth/login", "GET"): EVERYONE,
    ("/auth/login", "POST"): EVERYONE,
    ("/auth/logout", "POST"): EVERYONE,
    ("/auth/me", "GET"): EVERYONE,
    ("/auth/me/password", "POST"): OWN_CREDENTIALS,
    ("/auth/keys", "GET"): OWN_CREDENTIALS,
    ("/auth/keys", "POST"): OWN_CREDENTIALS,
    ("/auth/keys/{key_id}", "DELETE"): OWN_CREDENTIALS,
    ("/auth/accounts", "GET"): ADMIN,
    ("/auth/accounts", "POST"): ADMIN,
    ("/auth/accounts/{name}", "GET"): ADMIN,
    ("/auth/accounts/{name}", "PATCH"): ADMIN,
    ("/auth/accounts/{name}", "DELETE"): ADMIN,
    ("/auth/audit", "GET"): ADMIN,
    ("/iot/services", "GET"): DEVICES,
    ("/iot/services", "POST"): DEVICES,
    ("/iot/services", "PUT"): DEVICES,
    ("/iot/services", "DELETE"): DEVICES,
    ("/iot/devices", "GET"): DEVICES,
    ("/iot/devices", "POST"): DEVICES,
    ("/iot/devices/{device_id}", "GET"): DEVICES,
    ("/iot/devices/{device_id}", "PUT"): DEVICES,
    ("/iot/devices/{device_id}", "DELETE"): DEVICES,
    ("/occurrences", "GET"): OCCURRENCES_READ,
    ("/occurrences", "POST"): REPORT,
    ("/occurrences/duplicates", "GET"): REPORT,
    ("/occurrences/follow/{token}", "GET"): EVERYONE,
    ("/occurrences/config", "GET"): OCCURRENCES_READ,
    ("/occurrences/config/{kind}/{key}", "GET"): OCCURRENCES_READ,
    ("/occurrences/config/{kind}/{key}", "PUT"): ADMIN,
    ("/occurrences/config/{kind}/{key}", "DELETE"): ADMIN,
    ("/occurrences/{number}", "GET"): OCCURRENCES_READ,
    ("/occurrences/{number}", "PATCH"): TRIAGE,
    ("/occurrences/{number}/history", "GET"): OCCURRENCES_READ,
    # Which action a caller may take is the service's check (workflow.ACTIONS).
    ("/occurrences/{number}/actions", "POST"): OCCURRENCES_READ,
    ("/occurrences/{number}/updates", "POST"): OCCURRENCES_READ,
    ("/occurrences/{number}/contact", "GET"): CONTACT,
    ("/occurrences/{number}/photos/{photo}", "GET"): EVERYONE,
    ("/occurrences/statistics", "GET"): OCCURRENCES_READ,
    (f"{O311}/discovery.{{format}}", "GET"): EVERYONE,
    (f"{O311}/services.{{format}}", "GET"): EVERYONE,
    (f"{O311}/services/{{service_code}}.{{format}}", "GET"): EVERYONE,
    (f"{O311}/requests.{{format}}", "GET"): EVERYONE,
    (f"{O311}/requests.{{format}}", "POST"): OPEN311_REPORT,
    (f"{O311}/requests/{{service_request_id}}.{{format}}", "GET"): EVERYONE,
    (f"{O311}/tokens/{{token}}.{{format}}", "GET"): EVERYONE,
    (f"{O311}/servicerequestupdates.{{format}}", "GET"): EVERYONE,
    (f"{O311}/servicerequestupdates.{{format}}", "POST"): OPEN311_UPDATE,
    (f"{N}/entities", "GET"): READ,
    (f"{N}/entities", "POST"): WRITE,
    (f"{N}/entities", "PUT"): WRITE,  # 400: no entity id
    (f"{N}/entities", "PATCH"): WRITE,  # 400: no entity id
    (f"{N}/entities", "DELETE"): WRITE,  # 400: no entity id
    (f"{N}/entities/{{entity_id}}", "GET"): READ,
    (f"{N}/entities/{{entity_id}}", "PUT"): WRITE,
    (f"{N}/entities/{{entity_id}}", "PATCH"): WRITE,
    (f"{N}/entities/{{entity_id}}", "DELETE"): WRITE,
    (f"{N}/entities/{{entity_id}}/attrs", "POST"): WRITE,
    (f"{N}/entities/{{entity_id}}/attrs", "PATCH"): WRITE,
    (f"{N}/entities/{{entity_id}}/attrs/{{attr_id}}", "PATCH"): WRITE,
    (f"{N}/entities/{{entity_id}}/attrs/{{attr_id}}", "PUT"): WRITE,
    (f"{N}/entities/{{entity_id}}/attrs/{{attr_id}}", "DELETE"): WRITE,
    (f"{N}/entityOperations/create", "POST"): WRITE,
    (f"{N}/entityOperations/upsert", "POST"): WRITE,
    (f"{N}/entityOperations/update", "POST"): WRITE,
    (f"{N}/entityOperations/delete", "POST"): WRITE,
    (f"{N}/entityOperations/merge", "POST"): WRITE,
    (f"{N}/entityOperations/query", "POST"): READ,
    (f"{N}/types", "GET"): DISCOVER,
    (f"{N}/types/{{type}}", "GET"): DISCOVER,
    (f"{N}/attributes", "GET"): DISCOVER,
    (f"{N}/attributes/{{attr}}", "GET"): DISCOVER,
    (f"{N}/jsonldContexts", "GET"): CONTEXT_READ,
    (f"{N}/jsonldContexts", "POST"): CONTEXT_WRITE,
    # JSON-LD processors fetch a hosted @context without credentials.
    (f"{N}/jsonldContexts/{{context_id}}", "GET"): EVERYONE,
    (f"{N}/jsonldContexts/{{context_id}}", "DELETE"): CONTEXT_WRITE,
    (f"{N}/temporal/entities", "GET"): HISTORY_READ,
    (f"{N}/temporal/entities", "POST"): HISTORY_WRITE,
    (f"{N}/temporal/entityOperations/query", "POST"): HISTORY_READ,
    (f"{N}/temporal/entities/{{entity_id}}", "GET"): HISTORY_READ,
    (f"{N}/temporal/entities/{{entity_id}}", "DELETE"): HISTORY_WRITE,
    (f"{N}/temporal/entities/{{entity_id}}/attrs", "POST"): HISTORY_WRITE,
    (f"{N}/temporal/entities/{{entity_id}}/attrs/{{attr_id}}", "DELETE"): HISTORY_WRITE,
    (f"{N}/temporal/entities/{{entity_id}}/attrs/{{attr_id}}/{{instance_id}}", "PATCH"): (
        HISTORY_WRITE
    ),
    (f"{N}/temporal/entities/{{entity_id}}/attrs/{{attr_id}}/{{instance_id}}", "DELETE"): (
        HISTORY_WRITE
    ),
    (f"{N}/subscriptions", "GET"): SUBSCRIBE,
    (f"{N}/subscriptions", "POST"): SUBSCRIBE,
    (f"{N}/subscriptions/{{subscription_id}}", "GET"): SUBSCRIBE,
    (f"{N}/subscriptions/{{subscription_id}}", "PATCH"): SUBSCRIBE,
    (f"{N}/subscriptions/{{subscription_id}}", "DELETE"): SUBSCRIBE,
    (f"{N}/csourceRegistrations", "GET"): REGISTRATIONS_READ,
    (f"{N}/csourceRegistrations", "POST"): REGISTRATIONS_WRITE,
    (f"{N}/csourceRegistrations/{{registration_id}}", "GET"): REGISTRATIONS_READ,
    (f"{N}/csourceRegistrations/{{registration_id}}", "PATCH"): REGISTRATIONS_WRITE,
    (f"{N}/csourceRegistrations/{{registration_id}}", "DELETE"): REGISTRATIONS_WRITE,
    (f"{N}/csourceSubscriptions", "GET"): REGISTRATIONS_READ,
    (f"{N}/csourceSubscriptions", "POST"): REGISTRATIONS_READ,
    (f"{N}/csourceSubscriptions/{{subscription_id}}", "GET"): REGISTRATIONS_READ,
    (f"{N}/csourceSubscriptions/{{subscription_id}}", "PATCH"): REGISTRATIONS_READ,
    (f"{N}/csourceSubscriptions/{{subscription_id}}", "DELETE"): REGISTRATIONS_READ,
    ("/occurrences/{number}/messages", "GET"): CONTACT,
    ("/occurrences/{number}/followers", "POST"): REPORT,
}

SAMPLES = {
    "entity_id": OWN,
    "attr_id": "temperature",
    "type": "Thing",
    "attr": "temperature",
    "context_id": "no-such-context",
    "subscription_id": "urn:ngsi-ld:Subscription:none",
    "registration_id": "urn:ngsi-ld:ContextSourceRegistration:none",
    "instance_id": "urn:ngsi-ld:Instance:none",
    "key_id": "0123456789abcdef",
    "name": "nobody",
    "device_id": "no-such-device",
    "number": "1",
    "token": "no-such-token",
    "kind": "category",
    "key": "pothole",
    "photo": "p1",
    "format": "json",
    "service_code": "pothole",
    "service_request_id": "1",
}


def template(route: Route) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)


def served(app: Any) -> Iterator[tuple[Route, str, str]]:
    for route in app.routes:
        assert isinstance(route, GuardedRoute), f"{route.path} is not declared with guarded()"
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield route, template(route), method


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Any]]]:
    from starlette.testclient import TestClient

    folder = tmp_path_factory.mktemp("matrix")
    app = build_app(
        make_settings(
            store=f"sqlite:///{folder}/m.db",
            public_types="ParkingSpot",
            open311_jurisdictions=f"{TENANT}={TENANT}",
        )
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        tokens = client.portal.call(_principals, app)
        yield client, tokens


async def _principals(app: Any) -> dict[str, str | None]:
    accounts = app.state.accounts
    root = Principal(
        subject="test", kind="account", roles=frozenset({"admin"}), tenants=frozenset({"*"})
    )
    tokens: dict[str, str | None] = {"anonymous": None}
    for role in ("admin", "operator", "staff", "publisher", "citizen"):
        await accounts.create(root, f"m-{role}", roles=[role], tenants=[TENANT])
        owner = await accounts.store.get_account(f"m-{role}")
        tokens[role], _ = await accounts.create_key(account_principal(owner), {})
    operator = account_principal(await accounts.store.get_account("m-operator"))
    tokens["device"], _ = await accounts.create_key(
        operator, {"roles": ["device"], "entities": [OWN]}
    )
    await accounts.create(root, "m-other", roles=["admin"], tenants=["other"])
    other = account_principal(await accounts.store.get_account("m-other"))
    tokens["other-tenant admin"], _ = await accounts.create_key(other, {})
    return tokens


def _call(client: Any, method: str, path: str, token: str | None) -> Any:
    headers = {"NGSILD-Tenant": TENANT}
    if path.startswith("/open311/"):
        path += f"?jurisdiction_id={TENANT}"  # Open311 names its tenant by jurisdiction
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = None
    if method in ("POST", "PATCH", "PUT"):
        headers["Content-Type"] = "application/json"
        # Bodies that name the device's own entity, so that only the permission decides.
        own = f'{{"id": "{OWN}", "type": "Device"}}'
        if path.endswith("/entities") and method == "POST":
            body = own.encode()
        elif "/entityOperations/" in path and not path.endswith("/query"):
            body = (f'["{OWN}"]' if path.endswith("/delete") else f"[{own}]").encode()
        else:
            body = b"{}"
    return client.request(method, path, headers=headers, content=body)


def _refused(response: Any) -> str | None:
    if response.status_code == 403 and response.request.url.path.startswith("/open311/"):
        body = response.json()
        return "Open311Refused" if body and body[0]["code"] == 403 else None
    if response.status_code in (401, 403):
        kind = response.json().get("type", "").rsplit("/", 1)[-1]
        if kind in ("Unauthenticated", "AccessDenied"):
            return kind
    return None


def test_every_route_is_in_the_matrix(matrix):
    client, _ = matrix
    routes = {(t, m) for _, t, m in served(client.app)}
    missing = routes - set(EXPECTED)
    assert not missing, f"routes with no expected access in this test: {sorted(missing)}"
    gone = set(EXPECTED) - routes
    assert not gone, f"expected routes the app does not serve: {sorted(gone)}"


def test_every_method_declares_a_permission(matrix):
    client, _ = matrix
    for route, path, method in served(client.app):
        assert method in route.permissions, f"{method} {path} declares no permission"


@pytest.mark.parametrize(
    "who",
    [
        "admin",
        "operator",
        "staff",
        "publisher",
        "device",
        "citizen",
        "anonymous",
        "other-tenant admin",
    ],
)
def test_access(matrix, who):
    client, tokens = matrix
    wrong: list[str] = []
    for _route, path, method in served(client.app):
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
        # In another tenant, a principal is the public there.
        role = "anonymous" if who == "other-tenant admin" else who
        allowed = role in EXPECTED[(path, method)]
        response = _call(client, method, concrete, tokens[who])
        refused = _refused(response)
        if allowed and refused:
            wrong.append(f"{method} {path}: refused ({response.status_code} {refused})")
        elif not allowed:
            expected = "Unauthenticated" if who == "anonymous" else "AccessDenied"
            if path.startswith("/open311/"):
                expected = "Open311Refused"
            if refused != expected:
                wrong.append(f"{method} {path}: {response.status_code}, expected {expected}")
        assert response.status_code < 500, f"{method} {path}: {response.text}"
    assert not wrong, f"{who}:\n" + "\n".join(wrong)
