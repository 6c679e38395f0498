"""Which subscriptions a change concerns, decided inside the write transaction.

The store calls ``ChangeMatcher`` with the documents before and after a batch of writes; what
comes back are outbox entries it inserts in the same transaction, so a change and the
notifications it causes commit (or vanish) together. Everything here is pure and fast: the
subscriptions are compiled once per subscription epoch (``compile``), and a change costs a few
set operations per subscription of its tenant.

An outbox entry is ``(lane, subscription id, body)``: the lane is the endpoint URI (each endpoint
has its own queue), the body is JSON holding the trigger and the stored-form entities; the
notification itself is rendered at delivery, with the subscription's format and @context.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cidade.hub.model import KINDS, PREVIOUS
from cidade.hub.subscriptions import (
    DEFAULT_TRIGGERS,
    subscription_geoq,
    subscription_matches_entity,
    subscription_q,
)
from cidade.ngsild.query.geo import GeoQuery
from cidade.ngsild.query.q import QNode, evaluate

OutboxEntry = tuple[str, str, bytes]  # (lane = endpoint URI, subscription id, body JSON)


@dataclass(slots=True, frozen=True)
class Watching:
    """A subscription as the matcher needs it: parsed once, reused for every change."""

    id: str
    doc: dict[str, Any]
    lane: str
    triggers: frozenset[str]
    watched: frozenset[str] | None
    q: QNode | None
    geo: GeoQuery | None
    expires_at: str | None
    active: bool
    show_changes: bool


def compile_subscription(doc: dict[str, Any]) -> Watching | None:
    """The change-watching form of a stored subscription; None for periodic ones (timeInterval:
    they report on a clock, not on changes) and for those that cannot be parsed any more."""
    if "timeInterval" in doc:
        return None
    try:
        q = subscription_q(doc, lambda name: name)
        geo = subscription_geoq(doc)
    except Exception:
        return None  # validated at creation; never let one subscription stop every write
    watched = doc.get("watchedAttributes")
    return Watching(
        id=doc["id"],
        doc=doc,
        lane=doc["notification"]["endpoint"]["uri"],
        triggers=frozenset(doc.get("notificationTrigger", DEFAULT_TRIGGERS)),
        watched=frozenset(watched) if watched else None,
        q=q,
        geo=geo,
        expires_at=doc.get("expiresAt"),
        active=doc.get("isActive", True),
        show_changes=bool(doc["notification"].get("showChanges")),
    )


def _attribute_changes(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[set[str], set[str], set[str]]:
    """(created, updated, deleted) attribute IRIs between two stored documents."""
    old = before["attrs"] if before is not None else {}
    new = after["attrs"] if after is not None else {}
    created = {a for a in new if a not in old}
    deleted = {a for a in old if a not in new}
    updated = {a for a in new if a in old and new[a] != old[a]}
    return created, updated, deleted


def _geometry_matches(geo: GeoQuery, doc: dict[str, Any]) -> bool:
    return any(
        inst.get("type") == "GeoProperty" and geo.matches(inst.get("value"))
        for inst in doc["attrs"].get(geo.geoproperty, ())
    )


def _reason(sub: Watching, before: Any, after: Any, changes: tuple[set, set, set]) -> str | None:
    """The notificationTrigger this change fires for the subscription, or None."""
    created, updated, deleted = changes
    triggers = sub.triggers
    if after is None:
        return "entityDeleted" if "entityDeleted" in triggers else None
    if before is None and "entityCreated" in triggers:
        return "entityCreated"
    watched = sub.watched
    for trigger, attrs in (
        ("attributeCreated", created),
        ("attributeUpdated", updated),
        ("attributeDeleted", deleted),
    ):
        if trigger in triggers and attrs and (watched is None or not watched.isdisjoint(attrs)):
            return trigger
    if before is not None and "entityUpdated" in triggers and (created or updated or deleted):
        all_changed = created | updated | deleted
        if watched is None or not watched.isdisjoint(all_changed):
            return "entityUpdated"
    return None


def with_previous_values(
    before: dict[str, Any], after: dict[str, Any], updated: set[str]
) -> dict[str, Any]:
    """``after`` where each updated attribute instance also carries its value before the change
    (previousValue, previousObject, ... by kind: §5.2.14 showChanges)."""
    attrs = dict(after["attrs"])
    for attr in updated:
        old = {i.get("datasetId"): i for i in before["attrs"].get(attr, ())}
        instances = []
        for inst in attrs[attr]:
            prior = old.get(inst.get("datasetId"))
            member = KINDS.get(inst["type"])
            if prior is not None and member is not None and prior.get("type") == inst["type"]:
                if prior.get(member) != inst.get(member):
                    inst = {**inst, PREVIOUS[member]: prior.get(member)}
            instances.append(inst)
        attrs[attr] = instances
    return {**after, "attrs": attrs}


def deleted_entity(before: dict[str, Any], now: str) -> dict[str, Any]:
    """What a notification says of a deleted entity: its id, type and deletedAt."""
    return {"id": before["id"], "type": before["type"], "attrs": {}, "deletedAt": now}


def match_changes(
    watching: Sequence[Watching],
    changed: Iterable[str],
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any] | None],
    now: str,
) -> list[OutboxEntry]:
    """The outbox entries a batch of changes causes: one per (subscription, trigger), holding
    every entity of the batch that fired it, in the batch's order."""
    if not watching:
        return []
    # ``now`` comes from timefmt.now(): already in the stored format expiresAt is kept in.
    live = [s for s in watching if s.active and (s.expires_at is None or s.expires_at > now)]
    if not live:
        return []
    grouped: dict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = {}
    for eid in changed:
        old = before.get(eid)
        new = after.get(eid)
        if old is None and new is None:
            continue
        doc = new if new is not None else old
        assert doc is not None
        changes = _attribute_changes(old, new)
        for sub in live:
            if not subscription_matches_entity(sub.doc, eid, doc["type"]):
                continue
            reason = _reason(sub, old, new, changes)
            if reason is None:
                continue
            if sub.q is not None and not evaluate(sub.q, doc):
                continue
            if sub.geo is not None and not _geometry_matches(sub.geo, doc):
                continue
            key = (sub.id, reason)
            if key not in grouped:
                grouped[key] = (sub.lane, [])
            if new is None:
                data = deleted_entity(doc, now)
            elif sub.show_changes and old is not None and changes[1]:
                data = with_previous_values(old, new, changes[1])
            else:
                data = new
            grouped[key][1].append(data)
    return [
        (lane, sub_id, orjson.dumps({"trigger": reason, "entities": entities}))
        for (sub_id, reason), (lane, entities) in grouped.items()
    ]


def periodic_entry(sub: dict[str, Any], entities: list[dict[str, Any]]) -> OutboxEntry:
    """The outbox entry of a periodic (timeInterval) notification with the entities' state."""
    body = {"trigger": "timeInterval", "entities": entities}
    return (sub["notification"]["endpoint"]["uri"], sub["id"], orjson.dumps(body))


__all__ = [
    "OutboxEntry",
    "Watching",
    "compile_subscription",
    "deleted_entity",
    "match_changes",
    "periodic_entry",
]
