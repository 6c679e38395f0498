"""Several workers on one PostgreSQL behave as one hub: what one creates (subscription, tenant,
hosted @context) the other uses at once, and each notification goes out exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from tests.conftest import (
    LOOPBACK,
    NGSI,
    PG_URL,
    admin_client,
    drop_schema,
    make_settings,
    postgres_unavailable,
    service_missing,
)
from tests.hub.helpers import entity


@pytest.fixture
def workers() -> Iterator[tuple[TestClient, TestClient]]:
    reason = postgres_unavailable()
    if reason:
        service_missing(reason)
    schema = f"w_{uuid.uuid4().hex[:12]}"
    settings = make_settings(
        store=f"{PG_URL}?schema={schema}",
        notification_poll=0.2,
        context_usage_flush=0.2,
        private_networks=LOOPBACK,
    )
    try:
        with admin_client(build_app(settings)) as a, admin_client(build_app(settings)) as b:
            yield a, b
    finally:
        drop_schema(schema)


def test_subscription_made_on_one_worker_notifies_from_the_other(workers, receiver):
    a, b = workers
    r = a.post(
        f"{NGSI}/subscriptions",
        json={
            "type": "Subscription",
            "entities": [{"type": "Bollard"}],
            "notification": {"endpoint": {"uri": receiver.url}},
        },
    )
    assert r.status_code == 201
    # Through the other worker, straight away: no restart, no wait for a cache to expire.
    r = b.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Bollard:1", "Bollard", state="up"))
    assert r.status_code == 201
    (got,) = receiver.wait_for(1)
    assert got.body["data"][0]["id"] == "urn:ngsi-ld:Bollard:1"
    # ... and its status is the same seen from either worker.
    for client in (a, b):
        deadline = time.monotonic() + 5
        while True:
            listed = client.get(f"{NGSI}/subscriptions").json()
            if listed[0]["notification"].get("timesSent") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert listed[0]["notification"]["timesSent"] == 1


def test_each_notification_goes_out_once_and_in_order(workers, receiver):
    a, b = workers
    r = b.post(
        f"{NGSI}/subscriptions",
        json={
            "type": "Subscription",
            "entities": [{"type": "Bollard"}],
            "notification": {"endpoint": {"uri": receiver.url}, "format": "keyValues"},
        },
    )
    assert r.status_code == 201
    eid = "urn:ngsi-ld:Bollard:2"
    assert a.post(f"{NGSI}/entities", json=entity(eid, "Bollard", n=0)).status_code == 201
    for i in range(1, 60):
        client = a if i % 2 else b
        body = {"n": {"type": "Property", "value": i}}
        assert client.patch(f"{NGSI}/entities/{eid}/attrs", json=body).status_code == 204
    receiver.wait_entities(60, timeout=20)
    time.sleep(1.0)  # anything sent twice would arrive by now
    assert [e["n"] for e in receiver.entities()] == list(range(60))


def test_tenant_and_context_made_on_one_worker_are_known_to_the_other(workers):
    a, b = workers
    tenant = {"NGSILD-Tenant": "gaia"}
    assert b.get(f"{NGSI}/entities?type=Bollard", headers=tenant).status_code == 404
    r = a.post(f"{NGSI}/entities", json=entity("urn:ngsi-ld:Bollard:3", "Bollard"), headers=tenant)
    assert r.status_code == 201
    got = b.get(f"{NGSI}/entities?type=Bollard", headers=tenant)
    assert got.status_code == 200 and [e["id"] for e in got.json()] == ["urn:ngsi-ld:Bollard:3"]

    terms = {"@context": {"altura": "https://example.org/cidade/height"}}
    r = a.post(f"{NGSI}/jsonldContexts", json=terms)
    assert r.status_code == 201
    local_id = r.headers["location"].rsplit("/", 1)[1]
    assert b.get(f"{NGSI}/jsonldContexts/{local_id}").json() == terms
    url = b.get(f"{NGSI}/jsonldContexts/{local_id}?details=true").json()["URL"]
    link = {
        "Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    }
    body = entity("urn:ngsi-ld:Bollard:4", "Bollard", altura=1.2)
    assert b.post(f"{NGSI}/entities", json=body, headers=link).status_code == 201
    stored = a.get(f"{NGSI}/entities/urn:ngsi-ld:Bollard:4").json()
    assert stored["https://example.org/cidade/height"]["value"] == 1.2
    # Its uses are counted by each worker and added up in the store.
    assert a.get(f"{NGSI}/entities/urn:ngsi-ld:Bollard:4", headers=link).status_code == 200
    details = b.get(f"{NGSI}/jsonldContexts/{local_id}?details=true").json()
    assert details["numberOfHits"] >= 1  # b's own use at least; a's once it flushed
    # Bounded generously: a loaded CI machine flushes late, a working one at once.
    deadline = time.monotonic() + 30
    while details["numberOfHits"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        details = b.get(f"{NGSI}/jsonldContexts/{local_id}?details=true").json()
    assert details["numberOfHits"] == 2
    # Deleted through one worker: gone from the other as well.
    assert a.delete(f"{NGSI}/jsonldContexts/{local_id}").status_code == 204
    assert b.get(f"{NGSI}/jsonldContexts/{local_id}").status_code == 404
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = b.get(f"{NGSI}/entities/urn:ngsi-ld:Bollard:4", headers=link)
        if r.status_code == 503:
            break
        time.sleep(0.05)
    assert r.status_code == 503


def test_a_key_revoked_on_one_worker_stops_on_the_other_at_once(workers):
    a, b = workers
    made = a.post("/auth/keys", json={"label": "to revoke"})
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    # Used on the other worker first, so that worker holds it in its cache.
    assert b.get(f"{NGSI}/subscriptions", headers=key).status_code == 200
    assert a.delete(f"/auth/keys/{made.json()['id']}").status_code == 204
    # The cache lives 10 s; the store's "auth" announcement must empty it well before.
    deadline = time.monotonic() + 2
    while b.get(f"{NGSI}/subscriptions", headers=key).status_code != 401:
        assert time.monotonic() < deadline, "the other worker still takes the revoked key"
        time.sleep(0.05)
