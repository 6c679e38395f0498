"""§6.10, §6.11: subscriptions over HTTP on both stores (notifications are tested elsewhere)."""

from __future__ import annotations

import pytest

from cidade.config import Settings
from tests.conftest import LOOPBACK, NGSI, make_settings, problem_type

SUBS = f"{NGSI}/subscriptions"


@pytest.fixture
def settings(store_url: str) -> Settings:
    # Endpoints named here are on loopback (never called), which these tests allow.
    return make_settings(store=store_url, max_page_size=1000, private_networks=LOOPBACK)


def subscription(sid: str = "urn:ngsi-ld:Subscription:no2", **extra) -> dict:
    body = {
        "id": sid,
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["no2"],
        "q": "no2>40",
        "notification": {
            "attributes": ["no2"],
            "format": "keyValues",
            "endpoint": {"uri": "http://127.0.0.1:9999/notify", "accept": "application/json"},
        },
    }
    body.update(extra)
    return body


def test_create_retrieve_list_delete(client):
    r = client.post(SUBS, json=subscription())
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"{SUBS}/urn:ngsi-ld:Subscription:no2"
    got = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2")
    assert got.status_code == 200
    sub = got.json()
    assert sub["id"] == "urn:ngsi-ld:Subscription:no2" and sub["type"] == "Subscription"
    assert sub["entities"] == [{"type": "AirQualityObserved"}]
    assert sub["watchedAttributes"] == ["no2"]
    assert sub["q"] == "no2>40"
    assert sub["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9999/notify"
    assert sub["notification"]["format"] == "keyValues"
    assert sub["status"] == "active"
    r = client.post(SUBS, json=subscription())
    assert r.status_code == 409 and problem_type(r) == "AlreadyExists"
    client.post(SUBS, json=subscription("urn:ngsi-ld:Subscription:two"))
    listed = client.get(f"{SUBS}?count=true")
    assert [s["id"] for s in listed.json()] == [
        "urn:ngsi-ld:Subscription:no2",
        "urn:ngsi-ld:Subscription:two",
    ]
    assert listed.headers["ngsild-results-count"] == "2"
    assert [s["id"] for s in client.get(f"{SUBS}?limit=1&offset=1").json()] == [
        "urn:ngsi-ld:Subscription:two"
    ]
    assert client.delete(f"{SUBS}/urn:ngsi-ld:Subscription:no2").status_code == 204
    r = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2")
    assert r.status_code == 404 and problem_type(r) == "ResourceNotFound"
    assert client.delete(f"{SUBS}/urn:ngsi-ld:Subscription:no2").status_code == 404


def test_generated_id(client):
    body = subscription()
    del body["id"]
    r = client.post(SUBS, json=body)
    assert r.status_code == 201
    sid = r.headers["location"].rsplit("/", 1)[1]
    assert sid.startswith("urn:ngsi-ld:Subscription:")
    assert client.get(f"{SUBS}/{sid}").json()["id"] == sid


def test_update_merges_and_pauses(client):
    client.post(SUBS, json=subscription())
    r = client.patch(
        f"{SUBS}/urn:ngsi-ld:Subscription:no2",
        json={
            "isActive": False,
            "notification": {
                "format": "normalized",
                "endpoint": {"uri": "http://127.0.0.1:9999/notify"},
            },
        },
    )
    assert r.status_code == 204, r.text
    sub = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").json()
    assert sub["isActive"] is False and sub["status"] == "paused"
    assert sub["notification"]["format"] == "normalized"
    assert sub["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9999/notify"
    assert sub["q"] == "no2>40"
    bad = client.patch(f"{SUBS}/urn:ngsi-ld:Subscription:no2", json={"q": "no2>>"})
    assert bad.status_code == 400
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").json()["q"] == "no2>40"
    assert (
        client.patch(f"{SUBS}/urn:ngsi-ld:Subscription:none", json={"isActive": True}).status_code
        == 404
    )


def test_invalid_subscriptions_are_400_and_not_stored(client):
    bad_bodies = [
        subscription(type="Sub"),
        subscription(q="no2>>1"),
        subscription(notification={"endpoint": {"uri": "ftp://x/y"}}),
        subscription(notification={}),
        subscription(expiresAt="2001-01-01T00:00:00Z"),
        subscription(throttling=-1),
        subscription(
            geoQ={"georel": "near;maxDistance==10", "geometry": "Point", "coordinates": [500, 0]}
        ),
        {k: v for k, v in subscription().items() if k not in ("entities", "watchedAttributes")},
    ]
    for body in bad_bodies:
        r = client.post(SUBS, json=body)
        assert r.status_code == 400, (body, r.text)
        assert problem_type(r) == "BadRequestData"
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").status_code == 404


def test_subscriptions_belong_to_their_tenant(client):
    porto = {"NGSILD-Tenant": "porto"}
    assert client.post(SUBS, json=subscription(), headers=porto).status_code == 201
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2", headers=porto).status_code == 200
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").status_code == 404
    assert client.get(f"{SUBS}").json() == []


def test_members_with_defaults_are_shown_as_given(client):
    # §5.2.12: isActive, notification.sysAttrs and showChanges have defaults; a subscription
    # that did not give them is shown without them (its status says whether it is active).
    assert client.post(SUBS, json=subscription()).status_code == 201
    sub = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").json()
    assert "isActive" not in sub and sub["status"] == "active"
    assert "sysAttrs" not in sub["notification"] and "showChanges" not in sub["notification"]
    body = subscription("urn:ngsi-ld:Subscription:given", isActive=True)
    body["notification"]["sysAttrs"] = False
    assert client.post(SUBS, json=body).status_code == 201
    sub = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:given").json()
    assert sub["isActive"] is True and sub["notification"]["sysAttrs"] is False


def test_an_unavailable_jsonld_context_is_503_and_nothing_is_stored(client):
    body = subscription(jsonldContext="https://nowhere.invalid/context.jsonld")
    r = client.post(SUBS, json=body)
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable"
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").status_code == 404
    r = client.post(SUBS, json=subscription(jsonldContext="unknownContext"))
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    assert client.post(SUBS, json=subscription()).status_code == 201
    r = client.patch(
        f"{SUBS}/urn:ngsi-ld:Subscription:no2",
        json={"jsonldContext": "https://nowhere.invalid/context.jsonld"},
    )
    assert r.status_code == 503
    assert "jsonldContext" not in client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").json()


def test_an_update_replaces_the_notification_whole(client):
    # §5.8.2: a fragment's member replaces the subscription's; a notification without its
    # mandatory endpoint is refused and changes nothing.
    client.post(SUBS, json=subscription())
    path = f"{SUBS}/urn:ngsi-ld:Subscription:no2"
    for fragment in (
        {"notification": {"format": "normalized"}},
        {"notification": {"endpoint": None}},
    ):
        r = client.patch(path, json=fragment)
        assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(path).json()["notification"]["format"] == "keyValues"


def test_query_pages_are_linked(client):
    # §5.5.9: Link headers to the previous and next pages.
    for n in range(3):
        client.post(SUBS, json=subscription(f"urn:ngsi-ld:Subscription:{n}"))
    ld = {"Accept": "application/ld+json"}
    middle = client.get(f"{SUBS}/?limit=1&offset=1", headers=ld)
    assert [s["id"] for s in middle.json()] == ["urn:ngsi-ld:Subscription:1"]
    assert sorted(middle.headers["link"].split(",")) == [
        f'<{SUBS}?limit=1&offset=0>;rel="prev";type="application/ld+json"',
        f'<{SUBS}?limit=1&offset=2>;rel="next";type="application/ld+json"',
    ]
    last = client.get(f"{SUBS}?limit=1&offset=2", headers=ld)
    assert (
        last.headers["link"] == f'<{SUBS}?limit=1&offset=1>;rel="prev";type="application/ld+json"'
    )
    assert "link" not in client.get(f"{SUBS}?limit=5", headers=ld).headers
    # In JSON the @context travels in the same header, beside the page links.
    first = client.get(f"{SUBS}?limit=2&count=true")
    links = first.headers["link"]
    assert links.startswith("<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context")
    assert links.endswith(
        f'<{SUBS}?count=true&limit=2&offset=2>;rel="next";type="application/ld+json"'
    )


def test_pick_and_omit_are_checked(client):
    body = subscription()
    body["notification"] = {**body["notification"], "pick": ["id", "no2"]}
    r = client.post(SUBS, json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
    del body["notification"]["attributes"]
    body["notification"]["omit"] = ["no2"]
    r = client.post(SUBS, json=body)
    assert r.status_code == 400 and "same member" in r.json()["detail"]
    del body["notification"]["omit"]
    assert client.post(SUBS, json=body).status_code == 201
    got = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:no2").json()
    assert got["notification"]["pick"] == ["id", "no2"]
