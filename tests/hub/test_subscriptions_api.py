"""§6.10, §6.11: subscriptions over HTTP on both stores (notifications are tested elsewhere)."""

from __future__ import annotations

from tests.conftest import NGSI, problem_type

SUBS = f"{NGSI}/subscriptions"


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
        json={"isActive": False, "notification": {"format": "normalized"}},
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
