"""Fuzzing the platform against its own OpenAPI document (schemathesis).

Every operation of /openapi.json is called with generated requests, valid and invalid ones, on an
app over a fresh store (SQLite and PostgreSQL) with a little data in it, as a platform
administrator and anonymously (where the seed's type is public). No response may be a 5xx, and
every response must be one the document describes: its status code, content type, headers and
body schema.

One thing is kept out of the generated requests: references to remote @contexts (in a Link
header, in an ``@context`` member). Resolving them needs the network, and an unreachable one is,
by the specification, 503 LdContextNotAvailable: the fuzzer would only measure the sandbox's
network. Such references become the core @context; malformed Link headers and inline @contexts
are sent as generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from cidade.app import build_app
from cidade.hub.jsonld import is_core_context_url, parse_link_header
from cidade.ngsild.errors import NgsiError
from cidade.openapi import build_document
from tests.auth.helpers import provision_admin
from tests.conftest import make_settings

NGSI = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CORE_LINK = f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
# The ids the document gives as examples of path parameters: seeded, so the examples hit data.
ENTITY = "urn:ngsi-ld:Example:openapi-1"
SUBSCRIPTION = "urn:ngsi-ld:Subscription:openapi-1"


def invalid_data_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """negative_data_rejection, but for a batch operation a 207 rejects too: a batch reports each
    item that is not a valid entity in its BatchOperationResult (§5.2.16) and goes on with the
    others, as the document says."""
    if response.status_code == 207 and "/entityOperations/" in case.path:
        body = response.json()
        assert body["errors"], "a 207 reports at least one failed item"
        return None
    return negative_data_rejection(ctx, response, case)


# Generated examples per operation and store, on top of schemathesis' coverage cases (its
# boundary values, always run): four runs of every operation (two stores, two callers) within
# CI's budget. CIDADE_FUZZ_EXAMPLES=500 digs deeper. Anonymous callers are refused most
# operations before their input is read, so fewer examples reach what they can.
EXAMPLES = int(os.environ.get("CIDADE_FUZZ_EXAMPLES", "30"))
ANONYMOUS_EXAMPLES = max(1, EXAMPLES // 3)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    invalid_data_rejected,
]


@dataclass
class Target:
    """The app under test and the headers to send with every request."""

    app: Starlette
    headers: dict[str, str] = field(default_factory=dict)


def seed(target: Target) -> None:
    """A few entities with some history, and a subscription, in the default tenant."""
    with asgi.get_client(target.app) as client:

        def send(method: str, path: str, body: Any, expected: int) -> None:
            response = client.request(method, NGSI + path, json=body, headers=target.headers)
            assert response.status_code == expected, response.text

        for n, eid in enumerate([ENTITY, "urn:ngsi-ld:Example:openapi-2"]):
            send(
                "POST",
                "/entities",
                {
                    "id": eid,
                    "type": "Example",
                    "temperature": {
                        "type": "Property",
                        "value": 20 + n,
                        "unitCode": "CEL",
                        "observedAt": "2026-01-01T10:00:00Z",
                    },
                    "name": {"type": "LanguageProperty", "languageMap": {"en": "a", "pt": "um"}},
                    "near": {"type": "Relationship", "object": "urn:ngsi-ld:Example:other"},
                    "location": {
                        "type": "GeoProperty",
                        "value": {"type": "Point", "coordinates": [-8.61 + n, 41.15]},
                    },
                },
                201,
            )
            for hour in range(11, 14):
                send(
                    "PATCH",
                    f"/entities/{eid}/attrs",
                    {
                        "temperature": {
                            "type": "Property",
                            "value": hour + n,
                            "observedAt": f"2026-01-01T{hour}:00:00Z",
                        }
                    },
                    204,
                )
        send(
            "POST",
            "/subscriptions",
            {
                "id": SUBSCRIPTION,
                "type": "Subscription",
                "entities": [{"type": "Example"}],
                "watchedAttributes": ["temperature"],
                "isActive": False,
                "notification": {"endpoint": {"uri": "http://notify.example.org/notify"}},
            },
            201,
        )


def fuzz_target(store_url: str, *, anonymous: bool) -> Target:
    """An app over a fresh store with the seed in it, and the headers to fuzz it with."""
    # Access control on, as deployed. The seed is written by a platform administrator.
    token = provision_admin(store_url)
    admin = {"Authorization": f"Bearer {token}"}
    settings = make_settings(
        store=store_url,
        # Small pages of temporal instances, so the seeded history is served in 206 pages too.
        temporal_max_instances=2,
        # Anonymous callers read the public type (the seed's); no rate limit, or the fuzzer
        # would meet little but 429 after a few hundred requests.
        public_types="Example" if anonymous else "",
        rate_limit_anonymous=0,
    )
    app = build_app(settings)
    seed(Target(app, admin))
    return Target(app, {} if anonymous else admin)


# A fresh app per operation: schemathesis ends an app's lifespan with the test that started it,
# and a closed store does not reopen. Both stores (conftest's store_url).


@pytest.fixture
def administrator(store_url: str) -> Target:
    """As a platform administrator, so that every operation is reached (who may call what is
    tests/auth/test_access_matrix.py's concern)."""
    return fuzz_target(store_url, anonymous=False)


@pytest.fixture
def anonymous(store_url: str) -> Target:
    """With no credentials, where the seed's type is public: public reads are served, the
    rest refused (401), and neither may break."""
    return fuzz_target(store_url, anonymous=True)


# The document as the app serves it (tests/test_openapi.py checks GET /openapi.json is this very
# document): loaded at collection, so each operation is a test of its own, which xdist spreads.
schema = schemathesis.openapi.from_dict(build_document())


def _fetches(context: Any, top: bool = True) -> bool:
    """Whether resolving this @context would fetch a document (as ContextResolver._load walks
    it): a reference to anything but the core @context, at the top, in an array, in @import or in
    a scoped @context. A body's own references (at the top, in its array) resolve against the
    request URL, relative ones too; a relative one further in is refused (400) without fetching."""
    if isinstance(context, str):
        if is_core_context_url(context):
            return False
        return bool(context) if top else ":" in context
    if isinstance(context, list):
        return any(_fetches(c, top) for c in context)
    if isinstance(context, dict):
        if _fetches(context.get("@import"), top=False):
            return True
        return any(
            isinstance(v, dict) and _fetches(v.get("@context"), top=False) for v in context.values()
        )
    return False


def _offline_body(value: Any) -> Any:
    if isinstance(value, dict) and _fetches(value.get("@context")):
        return {**value, "@context": CORE}
    if isinstance(value, list):
        return [_offline_body(v) for v in value]
    return value


def stay_offline(case: Any) -> None:
    """Generated @contexts that would need the network become the core @context; malformed ones
    and inline ones stay, and must be refused or used."""
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "link":
            try:
                url = parse_link_header(headers[name])
            except NgsiError:
                continue  # malformed: 400 without fetching anything
            if url is not None and not is_core_context_url(url):
                headers[name] = CORE_LINK
    if isinstance(case.body, (dict, list)):
        case.body = _offline_body(case.body)


FUZZ_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    "print_blob": True,
}


@schema.parametrize()
@settings(max_examples=EXAMPLES, **FUZZ_SETTINGS)
def test_api_conforms_to_its_document(case: Any, administrator: Target) -> None:
    stay_offline(case)
    case.call_and_validate(app=administrator.app, headers=administrator.headers, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=ANONYMOUS_EXAMPLES, **FUZZ_SETTINGS)
def test_api_conforms_to_its_document_anonymously(case: Any, anonymous: Target) -> None:
    stay_offline(case)
    case.call_and_validate(app=anonymous.app, headers=anonymous.headers, checks=CHECKS)
