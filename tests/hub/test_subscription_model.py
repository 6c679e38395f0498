"""The Subscription data type: validation, stored form, update merge, client view."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cidade.hub.subscriptions import (
    DEFAULT_TRIGGERS,
    merge_subscription,
    normalize_subscription,
    render_subscription,
    subscription_geoq,
    subscription_matches_entity,
    subscription_matches_entity_type,
    subscription_q,
    subscription_status,
    triggers_on,
    watches,
)
from cidade.ngsild.errors import BadRequestData

DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
NOW = "2030-01-01T00:00:00.000000Z"
LATER = "2030-06-01T00:00:00.000000Z"


class SimpleTerms:
    """Terms without a context: every bare name is in the default vocabulary."""

    def expand(self, term: str) -> str:
        return term if ":" in term else DEFAULT + term

    def compact(self, iri: str) -> str:
        return iri[len(DEFAULT) :] if iri.startswith(DEFAULT) else iri

    def expand_vocab_value(self, value: Any) -> Any:
        return value

    def compact_vocab_value(self, value: Any) -> Any:
        return value


TERMS = SimpleTerms()


def minimal(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"endpoint": {"uri": "http://example.org/notify"}},
    }
    body.update(extra)
    return body


def full() -> dict[str, Any]:
    return {
        "id": "urn:ngsi-ld:Subscription:full",
        "type": "Subscription",
        "subscriptionName": "full",
        "description": "every member",
        "entities": [
            {"id": "urn:ngsi-ld:Building:1", "type": "Building"},
            {"idPattern": "^urn:ngsi-ld:Car:.*", "type": "Car,(Truck;ex:Heavy)"},
        ],
        "watchedAttributes": ["speed", "ex:load"],
        "notificationTrigger": ["entityCreated", "attributeUpdated", "entityDeleted"],
        "q": 'speed>50;brand=="Mercedes"',
        "geoQ": {
            "geometry": "Point",
            "coordinates": [-3.7, 40.4],
            "georel": "near;maxDistance==2000",
            "geoproperty": "position",
        },
        "expiresAt": "2031-01-01T00:00:00Z",
        "throttling": 5,
        "isActive": False,
        "lang": "en",
        "notification": {
            "attributes": ["speed", "brand"],
            "sysAttrs": True,
            "format": "keyValues",
            "showChanges": True,
            "endpoint": {
                "uri": "mqtt://broker.example.org:1883/cars/speed",
                "accept": "application/ld+json",
                "receiverInfo": [{"key": "Fiware-Service", "value": "city"}],
                "notifierInfo": [
                    {"key": "MQTT-QoS", "value": "1"},
                    {"key": "MQTT-Version", "value": "mqtt5.0"},
                ],
            },
        },
    }


def bad(body: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequestData, match=match):
        normalize_subscription(body, TERMS, NOW)


# -- valid bodies -------------------------------------------------------------------------------


def test_minimal_body_gets_defaults() -> None:
    sub = normalize_subscription(minimal(), TERMS, NOW)
    assert sub["id"].startswith("urn:ngsi-ld:Subscription:")
    assert sub["type"] == "Subscription"
    assert sub["entities"] == [{"type": DEFAULT + "Building"}]
    assert sub["notificationTrigger"] == list(DEFAULT_TRIGGERS)
    # Flags off by default are stored (and shown back) only when the client gave them.
    assert "isActive" not in sub
    assert sub["notification"] == {
        "format": "normalized",
        "endpoint": {"uri": "http://example.org/notify", "accept": "application/json"},
    }
    assert sub["createdAt"] == sub["modifiedAt"] == NOW
    assert "status" not in sub


def test_generated_ids_differ_and_given_id_is_used() -> None:
    a = normalize_subscription(minimal(), TERMS, NOW)
    b = normalize_subscription(minimal(), TERMS, NOW)
    assert a["id"] != b["id"]
    c = normalize_subscription(minimal(), TERMS, NOW, subscription_id="urn:x:1")
    assert c["id"] == "urn:x:1"
    d = normalize_subscription(minimal(id="urn:x:2"), TERMS, NOW, subscription_id="urn:x:1")
    assert d["id"] == "urn:x:2"


def test_full_body_stored_expanded() -> None:
    sub = normalize_subscription(full(), TERMS, NOW)
    assert sub["entities"] == [
        {"id": "urn:ngsi-ld:Building:1", "type": DEFAULT + "Building"},
        {
            "idPattern": "^urn:ngsi-ld:Car:.*",
            "type": f"{DEFAULT}Car|{DEFAULT}Truck;ex:Heavy",
        },
    ]
    assert sub["watchedAttributes"] == [DEFAULT + "speed", "ex:load"]
    assert sub["q"] == 'speed>50;brand=="Mercedes"'
    assert sub["geoQ"] == {
        "georel": "near;maxDistance==2000",
        "geometry": "Point",
        "coordinates": [-3.7, 40.4],
        "geoproperty": DEFAULT + "position",
    }
    assert sub["expiresAt"] == "2031-01-01T00:00:00.000000Z"
    assert sub["throttling"] == 5
    assert sub["isActive"] is False
    assert sub["notification"]["attributes"] == [DEFAULT + "speed", DEFAULT + "brand"]
    assert sub["notification"]["endpoint"]["notifierInfo"][0] == {"key": "MQTT-QoS", "value": "1"}


def test_watched_attributes_alone_and_time_interval() -> None:
    body = minimal(watchedAttributes=["speed"])
    del body["entities"]
    assert normalize_subscription(body, TERMS, NOW)["watchedAttributes"] == [DEFAULT + "speed"]
    periodic = normalize_subscription(minimal(timeInterval=30), TERMS, NOW)
    assert periodic["timeInterval"] == 30


def test_read_only_members_and_context_are_ignored() -> None:
    body = minimal(status="active", createdAt="2000-01-01T00:00:00Z")
    body["@context"] = "https://example.org/ctx.jsonld"
    body["notification"]["timesSent"] = 4
    sub = normalize_subscription(body, TERMS, NOW)
    assert "status" not in sub and "@context" not in sub
    assert sub["createdAt"] == NOW
    assert "timesSent" not in sub["notification"]


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.org:8443/a/b?x=1",
        "http://10.0.0.1/notify",
        "mqtts://user:pass@broker:8883/topic/sub",
    ],
)
def test_valid_endpoint_uris(uri: str) -> None:
    body = minimal()
    body["notification"]["endpoint"]["uri"] = uri
    assert normalize_subscription(body, TERMS, NOW)["notification"]["endpoint"]["uri"] == uri


# -- invalid bodies -----------------------------------------------------------------------------


def _with_notification(**members: Any) -> dict[str, Any]:
    body = minimal()
    body["notification"].update(members)
    return body


def _with_endpoint(**members: Any) -> dict[str, Any]:
    body = minimal()
    body["notification"]["endpoint"].update(members)
    return body


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "JSON object"),
        (minimal(type="Sub"), "type must be 'Subscription'"),
        ({k: v for k, v in minimal().items() if k != "type"}, "type must be 'Subscription'"),
        (minimal(id="not a uri"), "id must be a URI"),
        (minimal(foo=1), "unknown subscription member 'foo'"),
        (minimal(subscriptionName=3), "subscriptionName"),
        (minimal(description=["x"]), "description"),
        ({k: v for k, v in minimal().items() if k != "entities"}, "entities or watchedAttributes"),
        ({k: v for k, v in minimal().items() if k != "notification"}, "needs a notification"),
        (minimal(entities=[]), "entities must be a non-empty array"),
        (minimal(entities={"type": "A"}), "entities must be a non-empty array"),
        (minimal(entities=["A"]), r"entities\[0\] must be an object"),
        (minimal(entities=[{"id": "urn:a:1"}]), r"entities\[0\] needs a type"),
        (minimal(entities=[{"type": "A", "foo": 1}]), "unknown member 'foo'"),
        (minimal(entities=[{"type": "A", "id": "x y"}]), r"entities\[0\].id must be a URI"),
        (minimal(entities=[{"type": "A", "idPattern": "("}]), "not a valid regular expression"),
        (minimal(entities=[{"type": "A,("}]), "type selection"),
        (minimal(entities=[{"type": 5}]), r"entities\[0\]\.type must be an entity type"),
        (minimal(watchedAttributes=[]), "watchedAttributes must be a non-empty array"),
        (minimal(watchedAttributes="speed"), "watchedAttributes must be a non-empty array"),
        (minimal(watchedAttributes=["a b"]), "invalid attribute name"),
        (minimal(notificationTrigger=["entityChanged"]), "unknown notificationTrigger"),
        (minimal(notificationTrigger=[]), "notificationTrigger must be a non-empty array"),
        (minimal(q="speed>"), "invalid q at position"),
        (minimal(q=5), "q must be a string"),
        (minimal(geoQ={"geometry": "Point"}), "missing"),
        (minimal(geoQ={}), "geoQ needs"),
        (minimal(geoQ="near"), "geoQ must be an object"),
        (
            minimal(geoQ={"geometry": "Point", "coordinates": [1, 2], "georel": "near"}),
            "distance modifier",
        ),
        (
            minimal(geoQ={"geometry": "Point", "coordinates": [1, 2], "georel": "within", "x": 1}),
            "unknown member 'x' in geoQ",
        ),
        (minimal(scopeQ="/a"), "scopeQ .*not supported"),
        (minimal(csf="x"), "subscriptions to context source registrations"),
        (minimal(temporalQ={"timerel": "before"}), "subscriptions to context source"),
        (minimal(timeInterval=0), "timeInterval must be a positive number"),
        (minimal(timeInterval=-1), "timeInterval must be a positive number"),
        (minimal(timeInterval="10"), "timeInterval must be a positive number"),
        (minimal(timeInterval=True), "timeInterval must be a positive number"),
        (minimal(timeInterval=10, watchedAttributes=["a"]), "timeInterval and watchedAttributes"),
        (minimal(timeInterval=10, throttling=5), "timeInterval and throttling"),
        (minimal(throttling=0), "throttling must be a positive number"),
        (minimal(throttling="5"), "throttling must be a positive number"),
        (minimal(expiresAt="2020-01-01T00:00:00Z"), "not in the future"),
        (minimal(expiresAt=NOW), "not in the future"),
        (minimal(expiresAt="tomorrow"), "expiresAt .* is not an ISO 8601"),
        (minimal(isActive="yes"), "isActive must be true or false"),
        (minimal(lang=""), "lang must be a non-empty string"),
        (minimal(jsonldContext="no uri"), "jsonldContext must be a URI"),
        (minimal(notification="http://x"), "notification must be an object"),
        (minimal(notification={}), "notification needs an endpoint"),
        (_with_notification(foo=1), "unknown member 'foo' in notification"),
        (_with_notification(join="deep"), "notification.join"),
        (_with_notification(join="@none", joinLevel=0), "joinLevel must be a positive integer"),
        (_with_notification(joinLevel=True), "joinLevel must be a positive integer"),
        (_with_notification(pick=[]), "notification.pick must be a non-empty array"),
        (_with_notification(omit="id"), "notification.omit must be a non-empty array"),
        (_with_notification(pick=["id"], omit=["id"]), "cannot name the same member: id"),
        (_with_notification(pick=["id"], attributes=["a"]), "attributes cannot be combined"),
        (_with_notification(omit=["a"], attributes=["a"]), "attributes cannot be combined"),
        (minimal(datasetId="urn:x"), "datasetId must be a non-empty array"),
        (minimal(datasetId=["french"]), "datasetId 'french' is not a URI"),
        (_with_notification(attributes=[]), "notification.attributes"),
        (_with_notification(attributes=["a;b"]), "invalid attribute name"),
        (_with_notification(format="flat"), "notification.format"),
        (_with_notification(sysAttrs="true"), "sysAttrs must be true or false"),
        (_with_notification(showChanges=1), "showChanges must be true or false"),
        (_with_notification(endpoint="http://x"), "endpoint must be an object"),
        (_with_notification(endpoint={}), "endpoint needs a uri"),
        (_with_endpoint(foo=1), "unknown member 'foo' in notification.endpoint"),
        (_with_endpoint(uri="ftp://example.org/x"), "scheme must be one of"),
        (_with_endpoint(uri="notify"), "must be a URI"),
        (_with_endpoint(uri="http:///path"), "has no host"),
        (_with_endpoint(uri="http://host:99999/"), "not a valid URI"),
        (_with_endpoint(uri="mqtt://broker:1883"), "no MQTT topic"),
        (_with_endpoint(uri=5), "must be a URI"),
        (_with_endpoint(accept="text/plain"), "accept"),
        (_with_endpoint(timeout=-1), "timeout must be a non-negative number"),
        (_with_endpoint(receiverInfo=[{"key": "a"}]), "receiverInfo items"),
        (_with_endpoint(receiverInfo={"key": "a", "value": "b"}), "receiverInfo must be"),
        (_with_endpoint(receiverInfo=[{"key": "a", "value": 1}]), "receiverInfo items"),
        (
            _with_endpoint(uri="mqtt://b/t", notifierInfo=[{"key": "MQTT-QoS", "value": "3"}]),
            "MQTT-QoS must be 0, 1 or 2",
        ),
        (
            _with_endpoint(uri="mqtt://b/t", notifierInfo=[{"key": "MQTT-Version", "value": "4"}]),
            "MQTT-Version must be one of",
        ),
        (
            _with_endpoint(notifierInfo=[{"key": "MQTT-QoS", "value": "1"}]),
            "only for mqtt/mqtts endpoints",
        ),
    ],
)
def test_invalid_bodies_are_400(body: Any, match: str) -> None:
    with pytest.raises(BadRequestData, match=match) as info:
        normalize_subscription(body, TERMS, NOW)
    assert info.value.status == 400


# -- update -------------------------------------------------------------------------------------


def stored_full() -> dict[str, Any]:
    return normalize_subscription(full(), TERMS, NOW)


def test_merge_replaces_members_and_keeps_others() -> None:
    stored = stored_full()
    merged = merge_subscription(stored, {"throttling": 10, "q": "speed<10"}, TERMS, LATER)
    assert merged["throttling"] == 10
    assert merged["q"] == "speed<10"
    assert merged["entities"] == stored["entities"]
    assert merged["watchedAttributes"] == stored["watchedAttributes"]
    assert merged["createdAt"] == NOW and merged["modifiedAt"] == LATER
    assert merged["id"] == stored["id"]


def test_merge_replaces_the_notification_whole() -> None:
    # §5.8.2: a member of the fragment replaces the stored member; notification is one member.
    stored = stored_full()
    new = {"format": "concise", "endpoint": {"uri": "http://other.org/n"}}
    merged = merge_subscription(stored, {"notification": new}, TERMS, LATER)
    assert merged["notification"] == {
        "format": "concise",
        "endpoint": {"uri": "http://other.org/n", "accept": "application/json"},
    }
    # Null members of the new notification are absent ones.
    merged = merge_subscription(stored, {"notification": {**new, "sysAttrs": None}}, TERMS, LATER)
    assert "sysAttrs" not in merged["notification"]
    with pytest.raises(BadRequestData, match="notification needs an endpoint"):
        merge_subscription(stored, {"notification": {"format": "concise"}}, TERMS, LATER)
    with pytest.raises(BadRequestData, match="notification needs an endpoint"):
        merge_subscription(stored, {"notification": {"endpoint": None}}, TERMS, LATER)


def test_merge_null_removes_member() -> None:
    stored = stored_full()
    merged = merge_subscription(stored, {"q": None, "throttling": "urn:ngsi-ld:null"}, TERMS, LATER)
    assert "q" not in merged and "throttling" not in merged


def test_merge_does_not_touch_stored() -> None:
    stored = stored_full()
    before = copy.deepcopy(stored)
    merge_subscription(stored, {"throttling": 10, "isActive": True}, TERMS, LATER)
    assert stored == before


def test_merge_validates_like_create() -> None:
    stored = stored_full()
    with pytest.raises(BadRequestData, match="timeInterval and watchedAttributes"):
        merge_subscription(stored, {"timeInterval": 5}, TERMS, LATER)
    with pytest.raises(BadRequestData, match="unknown subscription member"):
        merge_subscription(stored, {"bogus": 1}, TERMS, LATER)
    with pytest.raises(BadRequestData, match=r"notification\.format"):
        merge_subscription(stored, {"notification": {"format": "x"}}, TERMS, LATER)
    with pytest.raises(BadRequestData, match="entities or watchedAttributes"):
        merge_subscription(stored, {"entities": None, "watchedAttributes": None}, TERMS, LATER)
    with pytest.raises(BadRequestData, match="cannot be empty"):
        merge_subscription(stored, {}, TERMS, LATER)


def test_merge_cannot_change_id_or_type() -> None:
    stored = stored_full()
    with pytest.raises(BadRequestData, match="id of a subscription cannot be changed"):
        merge_subscription(stored, {"id": "urn:x:other"}, TERMS, LATER)
    with pytest.raises(BadRequestData, match="type of a subscription cannot be changed"):
        merge_subscription(stored, {"type": "Other"}, TERMS, LATER)
    same = merge_subscription(stored, {"id": stored["id"], "type": "Subscription"}, TERMS, LATER)
    assert same["id"] == stored["id"]


def test_merge_expiry_rules() -> None:
    stored = normalize_subscription(minimal(expiresAt="2030-02-01T00:00:00Z"), TERMS, NOW)
    # Expired since: unrelated updates still work, a new expiresAt must be in the future.
    after = "2030-03-01T00:00:00.000000Z"
    assert merge_subscription(stored, {"isActive": False}, TERMS, after)["isActive"] is False
    with pytest.raises(BadRequestData, match="not in the future"):
        merge_subscription(stored, {"expiresAt": "2030-02-15T00:00:00Z"}, TERMS, after)
    renewed = merge_subscription(stored, {"expiresAt": "2031-01-01T00:00:00Z"}, TERMS, after)
    assert subscription_status(renewed, after) == "active"


# -- client view --------------------------------------------------------------------------------


def test_render_round_trip_gives_back_client_names() -> None:
    body = full()
    stored = normalize_subscription(body, TERMS, NOW)
    view = render_subscription(stored, TERMS, now=NOW)
    assert view["entities"] == [
        {"id": "urn:ngsi-ld:Building:1", "type": "Building"},
        {"idPattern": "^urn:ngsi-ld:Car:.*", "type": "Car|Truck;ex:Heavy"},
    ]
    assert view["watchedAttributes"] == ["speed", "ex:load"]
    assert view["geoQ"]["geoproperty"] == "position"
    assert view["notification"]["attributes"] == ["speed", "brand"]
    assert view["q"] == body["q"]
    assert view["status"] == "paused"
    assert "createdAt" not in view
    # The view is a valid body again and normalizes to the same stored form.
    again = normalize_subscription(view, TERMS, NOW)
    assert again == stored


def test_pick_omit_join_and_dataset_ids_round_trip() -> None:
    body = minimal(datasetId=["@none", "urn:ngsi-ld:Dataset:fr"])
    body["notification"].update(
        pick=["id", "speed", "ex:load"], omit=["type"], join="@none", joinLevel=2
    )
    body["notification"]["format"] = "simplified"
    stored = normalize_subscription(body, TERMS, NOW)
    assert stored["notification"]["pick"] == ["id", DEFAULT + "speed", "ex:load"]
    assert stored["notification"]["omit"] == ["type"]
    assert stored["datasetId"] == ["@none", "urn:ngsi-ld:Dataset:fr"]
    view = render_subscription(stored, TERMS, now=NOW)
    assert view["notification"]["pick"] == ["id", "speed", "ex:load"]
    assert view["notification"]["format"] == "simplified"
    assert (view["notification"]["join"], view["notification"]["joinLevel"]) == ("@none", 2)
    assert view["datasetId"] == ["@none", "urn:ngsi-ld:Dataset:fr"]
    assert "isActive" not in view and "sysAttrs" not in view["notification"]
    assert normalize_subscription(view, TERMS, NOW) == stored


def test_render_with_sys_attrs_and_status_info() -> None:
    stored = normalize_subscription(minimal(), TERMS, NOW)
    info = {
        "timesSent": 3,
        "timesFailed": 1,
        "lastNotification": "2030-01-02T00:00:00.000000Z",
        "lastSuccess": "2030-01-01T12:00:00.000000Z",
        "lastFailure": "2030-01-02T00:00:00.000000Z",
        "unrelated": 1,
    }
    view = render_subscription(stored, TERMS, status_info=info, sys_attrs=True, now=NOW)
    note = view["notification"]
    assert note["timesSent"] == 3 and note["timesFailed"] == 1
    assert note["status"] == "failed"  # derived: the last attempt failed
    assert "unrelated" not in note
    assert view["createdAt"] == view["modifiedAt"] == NOW
    assert "timesSent" not in stored["notification"]
    explicit = render_subscription(stored, TERMS, status_info={"status": "ok"}, now=NOW)
    assert explicit["notification"]["status"] == "ok"


@pytest.mark.parametrize(
    ("extra", "now", "status"),
    [
        ({}, NOW, "active"),
        ({"isActive": False}, NOW, "paused"),
        ({"expiresAt": "2030-02-01T00:00:00Z"}, NOW, "active"),
        ({"expiresAt": "2030-02-01T00:00:00Z"}, "2030-02-01T00:00:00.000000Z", "expired"),
        ({"expiresAt": "2030-02-01T00:00:00Z", "isActive": False}, LATER, "expired"),
    ],
)
def test_status(extra: dict[str, Any], now: str, status: str) -> None:
    stored = normalize_subscription(minimal(**extra), TERMS, NOW)
    assert subscription_status(stored, now) == status
    assert render_subscription(stored, TERMS, now=now)["status"] == status


# -- notifier helpers ---------------------------------------------------------------------------


def test_entity_matching() -> None:
    stored = stored_full()
    car, truck, heavy = DEFAULT + "Car", DEFAULT + "Truck", "ex:Heavy"
    assert subscription_matches_entity_type(stored, [DEFAULT + "Building"])
    assert subscription_matches_entity_type(stored, [car])
    assert subscription_matches_entity_type(stored, [truck, heavy])
    assert not subscription_matches_entity_type(stored, [truck])
    assert subscription_matches_entity(stored, "urn:ngsi-ld:Building:1", [DEFAULT + "Building"])
    assert not subscription_matches_entity(stored, "urn:ngsi-ld:Building:2", [DEFAULT + "Building"])
    assert subscription_matches_entity(stored, "urn:ngsi-ld:Car:9", [car])
    assert not subscription_matches_entity(stored, "urn:ngsi-ld:Bus:9", [car])
    body = minimal(watchedAttributes=["speed"])
    del body["entities"]
    anything = normalize_subscription(body, TERMS, NOW)
    assert subscription_matches_entity_type(anything, ["x:Y"])
    assert subscription_matches_entity(anything, "urn:a:1", ["x:Y"])


def test_watch_trigger_q_geoq_helpers() -> None:
    stored = stored_full()
    assert watches(stored, [DEFAULT + "speed"])
    assert not watches(stored, [DEFAULT + "brand"])
    assert triggers_on(stored, "entityDeleted")
    assert not triggers_on(stored, "attributeDeleted")
    assert subscription_q(stored, TERMS.expand) is not None
    geo = subscription_geoq(stored)
    assert geo is not None and geo.geoproperty == DEFAULT + "position"
    assert geo.max_distance == 2000
    plain = normalize_subscription(minimal(), TERMS, NOW)
    assert watches(plain, ["x:anything"])
    assert subscription_q(plain, TERMS.expand) is None
    assert subscription_geoq(plain) is None
