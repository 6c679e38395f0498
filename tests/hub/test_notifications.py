"""Notifications of subscriptions delivered to a real HTTP receiver on loopback, on both stores:
content and headers (§5.3.1), filters (watchedAttributes, q, geoQ, triggers), formats, status,
order, retries, give-up on refusal, throttling, periodic notifications, and isolation of a dead
endpoint from a live one."""

from __future__ import annotations

import logging
import time

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.config import Settings
from tests.conftest import CORE, NGSI, admin_client, notifying_settings
from tests.hub.helpers import entity, point
from tests.receiver import Receiver

E1 = "urn:ngsi-ld:AirQualityObserved:porto-1"
E2 = "urn:ngsi-ld:AirQualityObserved:porto-2"


@pytest.fixture
def settings(store_url: str) -> Settings:
    return notifying_settings(store_url, max_page_size=1000)


def subscribe(client: TestClient, uri: str, **members) -> str:
    body = {
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "notification": {"endpoint": {"uri": uri}},
    }
    notification = members.pop("notification", {})
    body["notification"].update(notification)
    body.update(members)
    r = client.post(f"{NGSI}/subscriptions", json=body)
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def create(client: TestClient, eid: str = E1, **attrs) -> None:
    r = client.post(f"{NGSI}/entities", json=entity(eid, "AirQualityObserved", **attrs))
    assert r.status_code == 201, r.text


def update(client: TestClient, eid: str = E1, **attrs) -> None:
    body = {k: {"type": "Property", "value": v} for k, v in attrs.items()}
    r = client.patch(f"{NGSI}/entities/{eid}/attrs", json=body)
    assert r.status_code == 204, r.text


def status_of(client: TestClient, sub_id: str) -> dict:
    r = client.get(f"{NGSI}/subscriptions/{sub_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(client: TestClient, sub_id: str, check, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = status_of(client, sub_id)
        if check(body["notification"]):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"status never reached the expected state: {body}")
        time.sleep(0.05)


def test_notification_content_and_headers(client, receiver):
    sub_id = subscribe(client, receiver.url)
    create(client, no2=41.5, location=point(-8.61, 41.15))
    (got,) = receiver.wait_for(1)
    body = got.body
    assert body["type"] == "Notification"
    assert body["id"].startswith("urn:ngsi-ld:Notification:")
    assert body["subscriptionId"] == sub_id
    assert body["notifiedAt"].endswith("Z")
    assert body["triggerReason"] == "attributeCreated"
    assert body["data"] == [
        {
            "id": E1,
            "type": "AirQualityObserved",
            "no2": {"type": "Property", "value": 41.5},
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [-8.61, 41.15]},
            },
        }
    ]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["link"] == (
        f'<{CORE}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    )
    assert got.path == "/notify"


def test_status_counts_successes(client, receiver):
    sub_id = subscribe(client, receiver.url)
    assert "timesSent" not in status_of(client, sub_id)["notification"]
    create(client, no2=1)
    receiver.wait_for(1)  # else both may wait together and go out as one notification
    update(client, no2=2)
    receiver.wait_for(2)
    # timesSent counts a notification as it leaves; lastSuccess once it was answered.
    n = wait_status(
        client,
        sub_id,
        lambda n: n.get("timesSent") == 2 and n.get("lastSuccess") == n["lastNotification"],
    )["notification"]
    assert n["status"] == "ok"
    assert "lastFailure" not in n and n.get("timesFailed", 0) == 0
    listed = client.get(f"{NGSI}/subscriptions").json()
    assert listed[0]["notification"]["timesSent"] == 2


def test_a_notification_is_counted_before_its_receiver_answers(client):
    """A receiver that reads the subscription as soon as it gets a notification, before it
    answers, finds it counted (timesSent, lastNotification = its notifiedAt): the count is
    recorded before the notification leaves, not once the answer is back."""
    seen: list[dict] = []
    receiver = Receiver(
        before_answer=lambda body: seen.append(status_of(client, body["subscriptionId"]))
    )
    try:
        sub_id = subscribe(client, receiver.url)
        create(client, no2=1)
        (got,) = receiver.wait_for(1)
        (during,) = seen
        assert during["notification"]["timesSent"] == 1
        assert during["notification"]["lastNotification"] == got.body["notifiedAt"]
        done = wait_status(client, sub_id, lambda n: n.get("lastSuccess") is not None)
        assert done["notification"]["timesSent"] == 1
        assert done["notification"]["lastSuccess"] == got.body["notifiedAt"]
    finally:
        receiver.close()


def test_watched_attributes_and_q_filter(client, receiver):
    subscribe(client, receiver.url, watchedAttributes=["no2"], q="no2>40")
    create(client, no2=10, pm10=3)  # no2 created but q is false
    update(client, pm10=50)  # not watched
    update(client, no2=45)  # watched, q true
    got = receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    assert got[0].body["data"][0]["no2"]["value"] == 45
    assert got[0].body["triggerReason"] == "attributeUpdated"


def test_geoq_filter(client, receiver):
    subscribe(
        client,
        receiver.url,
        geoQ={
            "georel": "near;maxDistance==1000",
            "geometry": "Point",
            "coordinates": [-8.61, 41.15],
        },
    )
    create(client, E1, no2=1, location=point(-8.0, 41.0))  # far away
    create(client, E2, no2=1, location=point(-8.611, 41.151))  # ~140 m
    got = receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    assert got[0].body["data"][0]["id"] == E2


def test_key_values_attributes_and_json_ld(client, receiver):
    subscribe(
        client,
        receiver.url,
        notification={
            "format": "keyValues",
            "attributes": ["no2"],
            "endpoint": {"uri": receiver.url, "accept": "application/ld+json"},
        },
    )
    create(client, no2=12, pm10=3)
    (got,) = receiver.wait_for(1)
    assert got.headers["content-type"] == "application/ld+json"
    assert "link" not in got.headers
    assert got.body["@context"] == CORE
    # Each entity is a JSON-LD document of its own too, as in a JSON-LD query result.
    assert got.body["data"] == [
        {"id": E1, "type": "AirQualityObserved", "no2": 12, "@context": CORE}
    ]


def test_user_context_compacts_notification(client, receiver):
    context = {"@context": {"dióxido": "https://uri.etsi.org/ngsi-ld/default-context/no2"}}
    r = client.post(
        f"{NGSI}/subscriptions",
        json={
            "type": "Subscription",
            "entities": [{"type": "AirQualityObserved"}],
            "watchedAttributes": ["dióxido"],
            "notification": {"endpoint": {"uri": receiver.url, "accept": "application/ld+json"}},
            **context,
        },
        headers={"content-type": "application/ld+json"},
    )
    assert r.status_code == 201, r.text
    create(client, no2=7)
    (got,) = receiver.wait_for(1)
    assert got.body["data"][0]["dióxido"] == {"type": "Property", "value": 7}
    hosted = got.body["@context"]
    assert hosted.startswith("http") and "/jsonldContexts/" in hosted


def test_receiver_info_and_tenant_header(client, receiver):
    headers = {"NGSILD-Tenant": "matosinhos"}
    r = client.post(
        f"{NGSI}/subscriptions",
        json={
            "type": "Subscription",
            "entities": [{"type": "AirQualityObserved"}],
            "notification": {
                "endpoint": {
                    "uri": receiver.url,
                    "receiverInfo": [{"key": "X-Auth-Token", "value": "abc"}],
                }
            },
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    create(client, no2=1)  # default tenant: not this subscription's
    r = client.post(
        f"{NGSI}/entities", json=entity(E2, "AirQualityObserved", no2=2), headers=headers
    )
    assert r.status_code == 201
    (got,) = receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.received) == 1
    assert got.body["data"][0]["id"] == E2
    assert got.headers["x-auth-token"] == "abc"
    assert got.headers["ngsild-tenant"] == "matosinhos"


def test_entity_triggers(client, receiver):
    subscribe(
        client,
        receiver.url,
        notificationTrigger=["entityCreated", "entityDeleted", "attributeDeleted"],
    )
    create(client, no2=1, pm10=2)
    update(client, no2=3)  # attributeUpdated is not asked for
    assert client.delete(f"{NGSI}/entities/{E1}/attrs/pm10").status_code == 204
    assert client.delete(f"{NGSI}/entities/{E1}").status_code == 204
    got = receiver.wait_for(3)
    time.sleep(0.5)
    reasons = [g.body["triggerReason"] for g in receiver.received]
    assert reasons == ["entityCreated", "attributeDeleted", "entityDeleted"]
    deleted = got[2].body["data"][0]
    assert deleted["id"] == E1 and deleted["type"] == "AirQualityObserved"
    assert deleted["deletedAt"].endswith("Z")


def test_order_is_kept(client, receiver):
    subscribe(client, receiver.url)
    create(client, no2=0)
    for i in range(1, 40):
        update(client, no2=i)
    got = receiver.wait_entities(40)
    assert [e["no2"]["value"] for e in got] == list(range(40))


def test_batch_upsert_is_one_notification(client, receiver):
    subscribe(client, receiver.url)
    batch = [
        entity(f"urn:ngsi-ld:AirQualityObserved:b{i}", "AirQualityObserved", no2=i)
        for i in range(5)
    ]
    r = client.post(f"{NGSI}/entityOperations/upsert", json=batch)
    assert r.status_code in (201, 204), r.text
    (got,) = receiver.wait_for(1)
    assert [e["no2"]["value"] for e in got.body["data"]] == list(range(5))


def test_retry_with_backoff_keeps_order(client, receiver):
    receiver.answers = [503, 500]
    sub_id = subscribe(client, receiver.url)
    create(client, no2=1)
    update(client, no2=2)  # waits behind the first, and may go out with it
    got = receiver.wait_entities(2, timeout=15)
    assert [e["no2"]["value"] for e in got] == [1, 2]
    assert receiver.attempts in (3, 4)
    n = wait_status(
        client,
        sub_id,
        lambda n: (
            n.get("timesSent") == receiver.attempts
            and n.get("lastSuccess", "") > n.get("lastFailure", "")
        ),
    )
    n = n["notification"]
    assert n["timesFailed"] == 2
    assert n["status"] == "ok"
    assert n["lastSuccess"] > n["lastFailure"]


def test_refusal_is_not_retried(client, receiver):
    receiver.answers = [400]
    sub_id = subscribe(client, receiver.url)
    create(client, no2=1)
    deadline = time.monotonic() + 5
    while receiver.attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    update(client, no2=2)
    (got,) = receiver.wait_for(1)
    assert got.body["data"][0]["no2"]["value"] == 2
    n = wait_status(client, sub_id, lambda n: n.get("timesSent") == 2 and "lastSuccess" in n)[
        "notification"
    ]
    assert n["timesFailed"] == 1
    assert receiver.attempts == 2


def test_failed_status(client):
    dead = Receiver(status=500)
    try:
        sub_id = subscribe(client, dead.url)
        create(client, no2=1)
        n = wait_status(client, sub_id, lambda n: n.get("timesFailed", 0) >= 1)["notification"]
        assert n["status"] == "failed"
        assert n["lastFailure"] == n["lastNotification"]
        assert "lastSuccess" not in n
    finally:
        dead.close()


def test_paused_and_expired_subscriptions_do_not_notify(client, receiver):
    subscribe(client, receiver.url, isActive=False)
    sub_id = subscribe(client, receiver.url, expiresAt="2099-01-01T00:00:00Z")
    r = client.patch(f"{NGSI}/subscriptions/{sub_id}", json={"isActive": False})
    assert r.status_code == 204
    create(client, no2=1)
    time.sleep(1.0)
    assert receiver.received == []
    r = client.patch(f"{NGSI}/subscriptions/{sub_id}", json={"isActive": True})
    assert r.status_code == 204
    update(client, no2=2)
    (got,) = receiver.wait_for(1)
    assert got.body["subscriptionId"] == sub_id


def test_deleted_subscription_stops_at_once(client, receiver):
    sub_id = subscribe(client, receiver.url)
    assert client.delete(f"{NGSI}/subscriptions/{sub_id}").status_code == 204
    create(client, no2=1)
    time.sleep(1.0)
    assert receiver.received == []


def test_throttling(client, receiver):
    subscribe(client, receiver.url, throttling=30)
    create(client, no2=1)
    receiver.wait_for(1)
    update(client, no2=2)
    update(client, no2=3)
    time.sleep(1.0)
    assert len(receiver.received) == 1


def test_periodic_notifications(client, receiver):
    create(client, no2=5)
    sub_id = subscribe(client, receiver.url, timeInterval=1)
    got = receiver.wait_for(2, timeout=8)
    assert all(g.body["triggerReason"] == "timeInterval" for g in got)
    assert got[0].body["data"][0]["no2"]["value"] == 5
    assert got[1].at - got[0].at > 0.6
    update(client, no2=6)  # no change-driven notification for a periodic subscription
    latest = receiver.wait_for(len(got) + 1, timeout=5)[-1]
    assert latest.body["triggerReason"] == "timeInterval"
    assert status_of(client, sub_id)["notification"]["timesSent"] >= 2


def test_dead_endpoint_does_not_slow_a_live_one(client, receiver):
    hanging = Receiver(delay=8.0)  # accepts, then answers nothing for 8 s
    try:
        subscribe(
            client, hanging.url, notification={"endpoint": {"uri": hanging.url, "timeout": 20000}}
        )
        subscribe(client, "http://127.0.0.1:9/refused")  # connection refused, retried
        subscribe(client, receiver.url)
        create(client, no2=0)
        for i in range(1, 10):
            update(client, no2=i)
        started = time.monotonic()
        got = receiver.wait_entities(10, timeout=3)
        assert time.monotonic() - started < 3
        assert [e["no2"]["value"] for e in got] == list(range(10))
        assert hanging.received == []
    finally:
        hanging.delay = 0
        hanging.close()


def test_outbox_survives_restart(settings, receiver):
    """Notifications a dead endpoint could not take stay in the outbox across a restart and
    go out, in order, once it answers."""
    receiver.status = 503
    with admin_client(build_app(settings)) as c:
        subscribe(c, receiver.url)
        create(c, no2=1)
        update(c, no2=2)
        deadline = time.monotonic() + 5
        while receiver.attempts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.attempts >= 1
    receiver.status = 200
    with admin_client(build_app(settings)):
        got = receiver.wait_entities(2, timeout=15)
        assert [e["no2"]["value"] for e in got] == [1, 2]


def test_show_changes(client, receiver):
    subscribe(client, receiver.url, notification={"showChanges": True})
    create(client, no2=1, pm10=4)
    update(client, no2=2, pm10=4)
    got = receiver.wait_entities(2)
    assert "previousValue" not in got[0]["no2"]
    changed = got[1]
    assert changed["no2"] == {"type": "Property", "value": 2, "previousValue": 1}
    assert changed["pm10"] == {"type": "Property", "value": 4}


def test_graceful_stop_hands_lanes_back_at_once(settings, receiver):
    """A worker that stops cleanly releases its lanes: the next one resumes without waiting for
    the lease to run out (30 s by default)."""
    slow = Receiver(delay=0.3)
    try:
        with admin_client(build_app(settings)) as c:
            subscribe(c, slow.url)
            create(c, no2=0)
            for i in range(1, 20):
                update(c, no2=i)
            slow.wait_for(1)
        slow.delay = 0
        started = time.monotonic()
        with admin_client(build_app(settings)):
            values: set = set()
            while values != set(range(20)) and time.monotonic() - started < 8:
                values = {e["no2"]["value"] for e in slow.entities()}
                time.sleep(0.05)
            assert values == set(range(20))
            assert time.monotonic() - started < 8
    finally:
        slow.close()


def test_waiting_notifications_go_out_merged_in_order(client, receiver):
    """Notifications of one subscription that pile up behind a failing endpoint go out, once it
    answers, in fewer notifications carrying every entity in order."""
    receiver.status = 503
    sub_id = subscribe(client, receiver.url)
    create(client, no2=0)
    deadline = time.monotonic() + 5
    while receiver.attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(1, 6):
        update(client, no2=i)
    receiver.status = 200
    got = receiver.wait_entities(6, timeout=15)
    assert [e["no2"]["value"] for e in got] == list(range(6))
    assert len(receiver.received) < 6
    n = wait_status(client, sub_id, lambda n: n.get("timesSent") == receiver.attempts)
    assert n["notification"]["timesSent"] == receiver.attempts


def test_deleted_attributes_and_entities_as_received(client, receiver):
    # §5.2.14: a deleted attribute is notified with NGSI-LD Null as its value (and deletedAt,
    # with sysAttrs); a deleted entity is its id, type, times and deletedAt.
    subscribe(
        client,
        receiver.url,
        notificationTrigger=["attributeDeleted", "entityDeleted"],
        notification={"sysAttrs": True, "format": "keyValues"},
    )
    create(client, no2=1, pm10=2)
    assert client.delete(f"{NGSI}/entities/{E1}/attrs/pm10").status_code == 204
    assert client.delete(f"{NGSI}/entities/{E1}").status_code == 204
    attr_gone, entity_gone = receiver.wait_entities(2)
    assert attr_gone["pm10"] == "urn:ngsi-ld:null" and attr_gone["no2"] == 1
    assert set(entity_gone) == {"id", "type", "createdAt", "modifiedAt", "deletedAt"}


def test_deleted_attribute_in_normalized_form_with_previous_value(client, receiver):
    subscribe(
        client,
        receiver.url,
        notificationTrigger=["attributeDeleted"],
        notification={"sysAttrs": True, "showChanges": True},
    )
    create(client, no2=1, pm10=2)
    merged = client.patch(
        f"{NGSI}/entities/{E1}", json={"pm10": {"type": "Property", "value": "urn:ngsi-ld:null"}}
    )
    assert merged.status_code == 204, merged.text
    (got,) = receiver.wait_entities(1)
    pm10 = got["pm10"]
    assert pm10["type"] == "Property" and pm10["value"] == "urn:ngsi-ld:null"
    assert pm10["previousValue"] == 2
    assert {"createdAt", "modifiedAt", "deletedAt"} <= set(pm10)


def test_dataset_id_pick_and_language_of_a_subscription(client, receiver):
    subscribe(
        client,
        receiver.url,
        datasetId=["urn:ngsi-ld:Dataset:fr"],
        lang="fr",
        notification={"pick": ["id", "name", "street"], "format": "simplified"},
    )
    name = [
        {"type": "Property", "value": "Tower"},
        {"type": "Property", "value": "Tour", "datasetId": "urn:ngsi-ld:Dataset:fr"},
    ]
    street = {
        "type": "LanguageProperty",
        "languageMap": {"fr": "Rue", "en": "Street"},
        "datasetId": "urn:ngsi-ld:Dataset:fr",
    }
    create(client, name=name, street=street, no2=1)
    (got,) = receiver.wait_entities(1)
    assert got == {"id": E1, "name": "Tour", "street": "Rue"}


def test_previous_vocab_is_compacted(client, receiver):
    subscribe(client, receiver.url, notification={"showChanges": True})
    kind = {"type": "VocabProperty", "vocab": "urban"}
    create(client, kind=kind)
    update_body = {"kind": {"type": "VocabProperty", "vocab": "rural"}}
    assert client.patch(f"{NGSI}/entities/{E1}/attrs", json=update_body).status_code == 204
    _, changed = receiver.wait_entities(2)
    assert changed["kind"] == {"type": "VocabProperty", "vocab": "rural", "previousVocab": "urban"}


def test_a_deleted_subscription_does_not_hold_up_its_endpoint(client, receiver):
    # The first subscription's failure parks the endpoint's lane for its cooldown (60 s);
    # once it is deleted, another subscription of the same endpoint is notified at once.
    receiver.answers = [500]
    first = subscribe(
        client, receiver.url, notification={"endpoint": {"uri": receiver.url, "cooldown": 60000}}
    )
    create(client, no2=1)
    deadline = time.monotonic() + 10
    while receiver.attempts < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.attempts == 1
    assert client.delete(f"{NGSI}/subscriptions/{first}").status_code == 204
    subscribe(client, receiver.url)
    update(client, no2=2)
    (got,) = receiver.wait_for(1, timeout=10)
    assert got.body["data"][0]["no2"]["value"] == 2


def test_a_subscription_that_no_longer_compiles_is_shown_invalid_and_stops_no_write(
    client, receiver, caplog
):
    """Stored subscriptions were validated at creation; one that a later version cannot read
    any more (here: its stored q, or an entity type, made unreadable) matches nothing, says so
    in its status and in the log (without its q), and never stops a write."""
    good = subscribe(client, receiver.url, q="NO2>10")
    bad_q = subscribe(client, receiver.url, q="NO2>20")
    bad_type = subscribe(client, receiver.url)
    store = client.app.state.store

    async def corrupt() -> None:
        for sub_id, change in ((bad_q, {"q": "NO2>>secret(("}), (bad_type, None)):
            doc = await store.get_subscription("", sub_id)
            if change:
                doc.update(change)
            else:
                doc["entities"] = [{"type": "(("}]
            assert await store.replace_subscription("", doc)

    client.portal.call(corrupt)
    with caplog.at_level(logging.WARNING, logger="cidade.notify"):
        create(client, NO2={"type": "Property", "value": 50})
        receiver.wait_for(1)
    time.sleep(0.5)
    assert [r.body["subscriptionId"] for r in receiver.received] == [good]
    assert status_of(client, good)["status"] == "active"
    for sub_id in (bad_q, bad_type):
        assert status_of(client, sub_id)["status"] == "invalid"
        listed = client.get(f"{NGSI}/subscriptions")
        assert listed.status_code == 200, listed.text
        assert {s["id"]: s["status"] for s in listed.json()}[sub_id] == "invalid"
        assert any(sub_id in r.getMessage() for r in caplog.records), caplog.text
    assert "secret" not in caplog.text
