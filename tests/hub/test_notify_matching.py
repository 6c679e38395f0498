"""Which changes notify which subscriptions (pure: hub/notify/matching.py)."""

from __future__ import annotations

import orjson

from cidade.hub.jsonld import ContextResolver
from cidade.hub.notify.matching import attribute_changes, compile_subscription, match_changes
from cidade.hub.subscriptions import normalize_subscription

NOW = "2026-11-25T12:00:00.000000Z"
V = "https://uri.etsi.org/ngsi-ld/default-context/"
TERMS = ContextResolver(allow_fetch=False).core


SHOW_CHANGES = {"endpoint": {"uri": "http://127.0.0.1:9/n"}, "showChanges": True}


def sub(**members):
    body = {
        "type": "Subscription",
        "entities": [{"type": "Bollard"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
        **members,
    }
    return compile_subscription(normalize_subscription(body, TERMS, NOW))


def doc(eid="urn:b:1", etype="Bollard", **attrs):
    return {
        "id": eid,
        "type": [V + etype],
        "attrs": {V + k: [{"type": "Property", "value": v}] for k, v in attrs.items()},
    }


def fired(subs, before, after):
    changed = list(dict.fromkeys([*before, *after]))
    entries = match_changes(subs, changed, before, after, NOW)
    return [(sub_id, orjson.loads(body)) for _, sub_id, body in entries]


def test_default_triggers_are_attribute_created_and_updated():
    s = sub()
    created = fired([s], {}, {"urn:b:1": doc(state="up")})
    assert [b["trigger"] for _, b in created] == ["attributeCreated"]
    updated = fired([s], {"urn:b:1": doc(state="up")}, {"urn:b:1": doc(state="down")})
    assert [b["trigger"] for _, b in updated] == ["attributeUpdated"]
    unchanged = fired([s], {"urn:b:1": doc(state="up")}, {"urn:b:1": doc(state="up")})
    assert unchanged == []
    deleted = fired([s], {"urn:b:1": doc(state="up")}, {"urn:b:1": None})
    assert deleted == []


def test_entity_triggers():
    s = sub(notificationTrigger=["entityCreated", "entityUpdated", "entityDeleted"])
    assert fired([s], {}, {"urn:b:1": doc(state="up")})[0][1]["trigger"] == "entityCreated"
    got = fired([s], {"urn:b:1": doc(state="up")}, {"urn:b:1": doc(state="down")})
    assert got[0][1]["trigger"] == "entityUpdated"
    got = fired([s], {"urn:b:1": doc(state="up")}, {"urn:b:1": None})
    assert got[0][1]["trigger"] == "entityDeleted"
    assert got[0][1]["entities"][0]["deletedAt"] == NOW


def test_watched_attributes():
    s = sub(watchedAttributes=["state"])
    before = {"urn:b:1": doc(state="up", battery=9)}
    assert fired([s], before, {"urn:b:1": doc(state="up", battery=8)}) == []
    assert len(fired([s], before, {"urn:b:1": doc(state="down", battery=9)})) == 1
    s2 = sub(watchedAttributes=["state"], notificationTrigger=["attributeDeleted"])
    assert fired([s2], before, {"urn:b:1": doc(state="up")}) == []
    assert len(fired([s2], before, {"urn:b:1": doc(battery=9)})) == 1


def test_selectors_q_and_paused():
    by_pattern = sub(entities=[{"type": "Bollard", "idPattern": "^urn:b:porto"}])
    other_type = sub(entities=[{"type": "Streetlight"}])
    with_q = sub(q='state=="down"')
    paused = sub(isActive=False)
    expired = sub(expiresAt="2099-01-01T00:00:00Z")
    object.__setattr__(expired, "expires_at", "2020-01-01T00:00:00.000000Z")
    after = {
        "urn:b:porto-1": doc("urn:b:porto-1", state="up"),
        "urn:b:gaia-1": doc("urn:b:gaia-1", state="down"),
    }
    got = fired([by_pattern, other_type, with_q, paused, expired], {}, after)
    ids = {(sid, tuple(e["id"] for e in b["entities"])) for sid, b in got}
    assert ids == {(by_pattern.id, ("urn:b:porto-1",)), (with_q.id, ("urn:b:gaia-1",))}


def test_one_entry_per_subscription_and_trigger_for_a_batch():
    s = sub()
    after = {f"urn:b:{i}": doc(f"urn:b:{i}", state="up") for i in range(5)}
    got = fired([s], {}, after)
    assert len(got) == 1
    assert [e["id"] for e in got[0][1]["entities"]] == list(after)


def test_periodic_subscriptions_do_not_watch_changes():
    assert sub(timeInterval=60) is None


def inst(value, dataset=None, kind="Property", **extra):
    member = {"Relationship": "object", "LanguageProperty": "languageMap"}.get(kind, "value")
    out = {"type": kind, member: value, "createdAt": "c", "modifiedAt": "m", **extra}
    if dataset:
        out["datasetId"] = dataset
    return out


def entity_doc(**attrs):
    return {
        "id": "urn:b:1",
        "type": [V + "Bollard"],
        "createdAt": "c",
        "modifiedAt": "m",
        "attrs": {V + k: v for k, v in attrs.items()},
    }


def test_changes_are_told_instance_by_instance():
    before = entity_doc(name=[inst("a"), inst("fr", "urn:d:fr")], gone=[inst(1)])
    after = entity_doc(name=[inst("b"), inst("de", "urn:d:de")], new=[inst(2)])
    change = attribute_changes(before, after)
    assert change.created == {V + "name": {"urn:d:de"}, V + "new": {None}}
    assert change.updated == {V + "name": {None}}
    assert change.deleted == {V + "name": {"urn:d:fr"}, V + "gone": {None}}
    only_fr = change.only(frozenset({"urn:d:fr"}))
    assert (only_fr.created, only_fr.updated, only_fr.deleted) == (
        {},
        {},
        {V + "name": {"urn:d:fr"}},
    )


def test_deleted_attributes_are_notified_as_ngsi_ld_null():
    # §5.2.14: a deleted attribute instance is in the notification with NGSI-LD Null as its
    # value, in the form its kind takes, with deletedAt.
    s = sub(notificationTrigger=["attributeDeleted"])
    before = {
        "urn:b:1": entity_doc(
            name=[inst("a"), inst("fr", "urn:d:fr")],
            street=[inst({"fr": "Rue"}, kind="LanguageProperty")],
            owner=[inst("urn:o:1", kind="Relationship")],
        )
    }
    after = {"urn:b:1": entity_doc(name=[inst("a")])}
    ((_, body),) = fired([s], before, after)
    assert body["trigger"] == "attributeDeleted"
    attrs = body["entities"][0]["attrs"]
    assert attrs[V + "name"] == [
        inst("a"),
        {**inst("urn:ngsi-ld:null", "urn:d:fr"), "deletedAt": NOW},
    ]
    assert attrs[V + "street"] == [
        {**inst({"@none": "urn:ngsi-ld:null"}, kind="LanguageProperty"), "deletedAt": NOW}
    ]
    assert attrs[V + "owner"][0]["object"] == "urn:ngsi-ld:null"


def test_show_changes_gives_previous_values_of_updated_and_deleted_instances():
    s = sub(notificationTrigger=["attributeUpdated"], notification=SHOW_CHANGES)
    before = {"urn:b:1": entity_doc(name=[inst("a")], gone=[inst(1)], same=[inst(3)])}
    after = {"urn:b:1": entity_doc(name=[inst("b")], same=[inst(3)])}
    ((_, body),) = fired([s], before, after)
    attrs = body["entities"][0]["attrs"]
    assert attrs[V + "name"] == [{**inst("b"), "previousValue": "a"}]
    assert attrs[V + "gone"] == [{**inst("urn:ngsi-ld:null"), "deletedAt": NOW, "previousValue": 1}]
    assert attrs[V + "same"] == [inst(3)]
    # A created entity has no previous values.
    s2 = sub(notification=SHOW_CHANGES)
    ((_, created),) = fired([s2], {}, after)
    assert created["entities"][0]["attrs"][V + "name"] == [inst("b")]


def test_a_deleted_entity_is_its_id_type_times_and_deletion():
    before = {"urn:b:1": entity_doc(name=[inst("a")], state=[inst("up")])}
    gone = {"urn:b:1": None}
    plain = sub(notificationTrigger=["entityDeleted"])
    ((_, body),) = fired([plain], before, gone)
    assert body["entities"] == [
        {
            "id": "urn:b:1",
            "type": [V + "Bollard"],
            "attrs": {},
            "createdAt": "c",
            "modifiedAt": "m",
            "deletedAt": NOW,
        }
    ]
    # With showChanges, every attribute as deleted, with its previous value.
    changes = sub(notificationTrigger=["entityDeleted"], notification=SHOW_CHANGES)
    ((_, body),) = fired([changes], before, gone)
    assert body["entities"][0]["attrs"][V + "state"] == [
        {**inst("urn:ngsi-ld:null"), "deletedAt": NOW, "previousValue": "up"}
    ]
    # A subscription to attribute deletions hears of the watched attributes it deleted.
    watching = sub(notificationTrigger=["attributeDeleted"], watchedAttributes=["name"])
    ((_, body),) = fired([watching], before, gone)
    assert body["trigger"] == "attributeDeleted"
    assert list(body["entities"][0]["attrs"]) == [V + "name"]
    assert (
        fired(
            [sub(notificationTrigger=["attributeDeleted"], watchedAttributes=["x"])], before, gone
        )
        == []
    )


def test_a_dataset_id_selection_hears_only_of_its_instances():
    s = sub(datasetId=["urn:d:fr"])
    before = {"urn:b:1": entity_doc(name=[inst("a"), inst("fr", "urn:d:fr")])}
    default_changed = {"urn:b:1": entity_doc(name=[inst("b"), inst("fr", "urn:d:fr")])}
    assert fired([s], before, default_changed) == []
    fr_changed = {"urn:b:1": entity_doc(name=[inst("a"), inst("fr2", "urn:d:fr")])}
    assert len(fired([s], before, fr_changed)) == 1
    default_only = sub(datasetId=["@none"])
    assert len(fired([default_only], before, default_changed)) == 1


def test_a_percent_encoded_q_is_decoded():
    # Clients copy q from URLs into subscriptions: "%20" is a space there.
    s = sub(q='state=="out%20of%20order"')
    assert len(fired([s], {}, {"urn:b:1": doc(state="out of order")})) == 1
    assert fired([s], {}, {"urn:b:1": doc(state="out%20of%20order")}) == []


def test_an_attribute_deleted_whole_is_one_deleted_instance():
    s = sub(notificationTrigger=["attributeDeleted"])
    before = {"urn:b:1": entity_doc(name=[inst("fr", "urn:d:fr"), inst("a")], n=[inst(1)])}
    ((_, body),) = fired([s], before, {"urn:b:1": entity_doc(n=[inst(1)])})
    assert body["entities"][0]["attrs"][V + "name"] == [
        {**inst("urn:ngsi-ld:null"), "deletedAt": NOW}
    ]
