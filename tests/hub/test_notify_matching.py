"""Which changes notify which subscriptions (pure: hub/notify/matching.py)."""

from __future__ import annotations

import orjson

from cidade.hub.jsonld import ContextResolver
from cidade.hub.notify.matching import compile_subscription, match_changes
from cidade.hub.subscriptions import normalize_subscription

NOW = "2026-11-25T12:00:00.000000Z"
V = "https://uri.etsi.org/ngsi-ld/default-context/"
TERMS = ContextResolver(allow_fetch=False).core


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
