"""§5.11 (§6.12, §6.13): subscriptions to context source registrations on both stores: their
CRUD (the Subscription data type of the csource kind) and their ContextSourceNotifications
(newlyMatching at creation and change, updated, noLongerMatching) delivered to a real HTTP
receiver on loopback."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from cidade.config import Settings
from tests.conftest import NGSI, notifying_settings, problem_type

REGS = f"{NGSI}/csourceRegistrations"
CSUBS = f"{NGSI}/csourceSubscriptions"


@pytest.fixture
def settings(store_url: str) -> Settings:
    return notifying_settings(store_url, max_page_size=1000)


def register(client: TestClient, rid: str, *types: str, **extra) -> None:
    body = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:{rid}",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": t}]} for t in types],
        "endpoint": "http://csource.example.org:1026",
        **extra,
    }
    r = client.post(REGS, json=body)
    assert r.status_code == 201, r.text


def subscribe(client: TestClient, uri: str, *types: str, **members) -> str:
    body = {
        "type": "Subscription",
        "entities": [{"type": t} for t in types],
        "notification": {"endpoint": {"uri": uri}},
        **members,
    }
    r = client.post(CSUBS, json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"].startswith(f"{CSUBS}/urn:ngsi-ld:Subscription:")
    return r.headers["location"].rsplit("/", 1)[1]


def reg_ids(notification: dict) -> list[str]:
    return [d["id"].rsplit(":", 1)[1] for d in notification["data"]]


def test_crud_is_apart_from_entity_subscriptions(client):
    sub_id = subscribe(client, "http://127.0.0.1:9/notify", "Building")
    got = client.get(f"{CSUBS}/{sub_id}")
    assert got.status_code == 200
    body = got.json()
    assert body["entities"] == [{"type": "Building"}] and body["status"] == "active"
    assert "notificationTrigger" not in body
    # not an entity subscription, and not listed as one
    assert client.get(f"{NGSI}/subscriptions/{sub_id}").status_code == 404
    assert client.get(f"{NGSI}/subscriptions").json() == []
    assert [s["id"] for s in client.get(CSUBS).json()] == [sub_id]
    # one id space: an entity subscription cannot take its id
    r = client.post(
        f"{NGSI}/subscriptions",
        json={
            "id": sub_id,
            "type": "Subscription",
            "entities": [{"type": "Building"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        },
    )
    assert r.status_code == 409 and problem_type(r) == "AlreadyExists"
    r = client.patch(f"{CSUBS}/{sub_id}", json={"isActive": False})
    assert r.status_code == 204
    assert client.get(f"{CSUBS}/{sub_id}").json()["status"] == "paused"
    assert client.delete(f"{NGSI}/subscriptions/{sub_id}").status_code == 404
    assert client.delete(f"{CSUBS}/{sub_id}").status_code == 204
    assert client.get(f"{CSUBS}/{sub_id}").status_code == 404
    r = client.get(f"{CSUBS}/invalidUri")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"


@pytest.mark.parametrize(
    "members",
    [
        {"notificationTrigger": ["entityCreated"]},
        {"temporalQ": {"timerel": "before"}},
        {"temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z", "x": 1}},
        {"temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z", "timeproperty": "z"}},
        {"csf": "(("},
        {
            "geoQ": {
                "georel": "near;maxDistance==10",
                "geometry": "Point",
                "coordinates": [0, 0],
                "geoproperty": "position",
            }
        },
        {"expiresAt": "2018-08-01T22:07:00Z"},
        {"watchedAttributes": []},
    ],
)
def test_invalid_csource_subscriptions(client, members):
    body = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        **members,
    }
    r = client.post(CSUBS, json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", (members, r.text)
    assert client.get(CSUBS).json() == []


def test_temporal_q_and_csf_are_entity_subscription_errors(client):
    body = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"},
    }
    r = client.post(f"{NGSI}/subscriptions", json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    body = {**body, "temporalQ": {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}}
    r = client.post(CSUBS, json=body)
    assert r.status_code == 201
    shown = client.get(r.headers["location"]).json()
    assert shown["temporalQ"] == {"timerel": "after", "timeAt": "2020-01-01T00:00:00Z"}


def test_initial_then_created_updated_no_longer_matching(client, receiver):
    register(client, "b1", "Building")
    register(client, "v1", "Vehicle")
    sub_id = subscribe(client, receiver.url, "Building")
    (initial,) = receiver.wait_for(1)
    body = initial.body
    assert body["type"] == "ContextSourceNotification"
    assert body["subscriptionId"] == sub_id and body["triggerReason"] == "newlyMatching"
    assert body["id"].startswith("urn:ngsi-ld:Notification:") and body["notifiedAt"]
    assert reg_ids(body) == ["b1"]
    assert body["data"][0]["information"] == [{"entities": [{"type": "Building"}]}]
    assert initial.headers["content-type"] == "application/json"
    # a new matching registration, with only its matching RegistrationInfo
    register(client, "b2", "Bus", "Building")
    got = receiver.wait_for(2)[1].body
    assert got["triggerReason"] == "newlyMatching" and reg_ids(got) == ["b2"]
    assert got["data"][0]["information"] == [{"entities": [{"type": "Building"}]}]
    # changed, still matching
    url = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:b2"
    assert client.patch(url, json={"endpoint": "http://other.example.org"}).status_code == 204
    got = receiver.wait_for(3)[2].body
    assert got["triggerReason"] == "updated"
    assert got["data"][0]["endpoint"] == "http://other.example.org"
    # changed away
    r = client.patch(url, json={"information": [{"entities": [{"type": "Bus"}]}]})
    assert r.status_code == 204
    got = receiver.wait_for(4)[3].body
    assert got["triggerReason"] == "noLongerMatching" and reg_ids(got) == ["b2"]
    # deleted
    r = client.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:b1")
    assert r.status_code == 204
    got = receiver.wait_for(5)[4].body
    assert got["triggerReason"] == "noLongerMatching" and reg_ids(got) == ["b1"]
    # a registration it never selected tells it nothing
    register(client, "v2", "Vehicle")
    client.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:v1")
    register(client, "b3", "Building")
    got = receiver.wait_for(6)[5].body
    assert reg_ids(got) == ["b3"]
    # the status counts what was sent (settled just after the receiver answered)
    deadline = time.monotonic() + 10
    while True:
        shown = client.get(f"{CSUBS}/{sub_id}").json()["notification"]
        if shown.get("timesSent", 0) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert shown["timesSent"] == 6 and shown["status"] == "ok"


def test_changing_the_subscription_notifies_what_it_selects_now(client, receiver):
    register(client, "v1", "Vehicle")
    register(client, "b1", "Bus")
    sub_id = subscribe(client, receiver.url, "Building")
    r = client.patch(f"{CSUBS}/{sub_id}", json={"entities": [{"type": "Vehicle"}, {"type": "Bus"}]})
    assert r.status_code == 204
    (got,) = receiver.wait_for(1)
    assert got.body["triggerReason"] == "newlyMatching"
    assert sorted(reg_ids(got.body)) == ["b1", "v1"]


def test_paused_and_expired_subscriptions_are_not_notified(client, receiver):
    paused = subscribe(client, receiver.url, "Building", isActive=False)
    live = subscribe(client, receiver.url, "Vehicle")
    register(client, "b1", "Building")
    register(client, "v1", "Vehicle")
    (got,) = receiver.wait_for(1)
    assert got.body["subscriptionId"] == live and reg_ids(got.body) == ["v1"]
    assert client.patch(f"{CSUBS}/{paused}", json={"isActive": True}).status_code == 204
    # switched on: told of what it selects now
    got = receiver.wait_for(2)[1].body
    assert got["subscriptionId"] == paused and reg_ids(got) == ["b1"]


def test_filters_watched_attributes_q_geo_temporal(client, receiver):
    register(
        client,
        "near",
        "Building",
        location={"type": "Point", "coordinates": [-8.521, 41.2]},
        observationInterval={"startAt": "2020-08-01T22:07:00Z"},
        region="north",
    )
    register(client, "far", "Building", location={"type": "Point", "coordinates": [0, 0]})
    geo = {"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": [-8.52, 41.2]}
    subscribe(client, receiver.url, "Building", geoQ=geo)
    subscribe(client, receiver.url, "Building", q='region=="north"')
    subscribe(client, receiver.url, "Building", csf='region=="south"')
    subscribe(
        client,
        receiver.url,
        "Building",
        temporalQ={"timerel": "after", "timeAt": "2020-06-01T22:07:00Z"},
    )
    got = receiver.wait_for(3)
    assert [reg_ids(g.body) for g in got] == [["near"], ["near"], ["near"]]
    subscribe(client, receiver.url, "Building", watchedAttributes=["name"])
    got = receiver.wait_for(4)[3].body
    # RegistrationInfo without attribute names provides every attribute
    assert sorted(reg_ids(got)) == ["far", "near"]
    # one whose observation ended does not provide the latest information
    end = {"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"}
    url = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:near"
    assert client.patch(url, json={"observationInterval": end}).status_code == 204
    # (geoQ, q and watchedAttributes: no longer; temporalQ: still matched)
    got = receiver.wait_for(8)[4:]
    reasons = sorted(g.body["triggerReason"] for g in got)
    assert reasons == ["noLongerMatching"] * 3 + ["updated"]
    assert len(receiver.received) == 8


def test_tenant_and_json_ld_notifications(client, receiver):
    headers = {"NGSILD-Tenant": "porto"}
    body = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": receiver.url, "accept": "application/ld+json"}},
    }
    assert client.post(CSUBS, json=body, headers=headers).status_code == 201
    register(client, "elsewhere", "Building")  # the default tenant
    reg = {
        "id": "urn:ngsi-ld:ContextSourceRegistration:p1",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Building"}]}],
        "endpoint": "http://csource.example.org",
    }
    assert client.post(REGS, json=reg, headers=headers).status_code == 201
    (got,) = receiver.wait_for(1)
    assert reg_ids(got.body) == ["p1"]
    assert got.headers["ngsild-tenant"] == "porto"
    assert got.headers["content-type"] == "application/ld+json"
    assert got.body["@context"]
