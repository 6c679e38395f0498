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

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cidade.hub.model import KINDS, PREVIOUS
from cidade.hub.subscriptions import (
    DEFAULT_TRIGGERS,
    subscription_filters,
    subscription_matches_entity,
)
from cidade.ngsild.null import null_value
from cidade.ngsild.query.geo import GeoQuery
from cidade.ngsild.query.q import QNode, evaluate

log = logging.getLogger("cidade.notify")

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
    # The datasetIds of the instances it is about (None: the default instance); None: all.
    datasets: frozenset[str | None] | None


def compile_subscription(doc: dict[str, Any]) -> Watching | None:
    """The change-watching form of a stored subscription; None for periodic ones (timeInterval:
    they report on a clock, not on changes) and for those that cannot be parsed any more: they
    were validated at creation, and one must never stop every write. Those are logged here
    and shown with the status "invalid" (subscriptions.py)."""
    if "timeInterval" in doc:
        return None
    try:
        q, geo = subscription_filters(doc)
    except Exception as exc:
        # Its id and what failed, not its q or geoQ: they may name people or places.
        log.warning(
            "subscription %s can no longer be evaluated and matches no change (status invalid): %s",
            doc.get("id"),
            type(exc).__name__,
        )
        return None
    watched = doc.get("watchedAttributes")
    datasets = doc.get("datasetId")
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
        datasets=frozenset(None if d == "@none" else d for d in datasets) if datasets else None,
    )


Keys = dict[str, set[str | None]]  # attribute IRI -> the datasetIds of its instances concerned


@dataclass(slots=True)
class Change:
    """What one operation did to one entity's attributes, instance by instance (an instance is
    named by its datasetId, None for the default one)."""

    created: Keys
    updated: Keys
    deleted: Keys

    def any(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def only(self, datasets: frozenset[str | None] | None) -> Change:
        """The part of the change that touches these datasetIds (all of it for None)."""
        if datasets is None:
            return self

        def keep(keys: Keys) -> Keys:
            out = {}
            for attr, ids in keys.items():
                chosen = ids & datasets
                if chosen:
                    out[attr] = chosen
            return out

        return Change(keep(self.created), keep(self.updated), keep(self.deleted))


def _by_dataset(instances: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {i.get("datasetId"): i for i in instances}


def attribute_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> Change:
    """The instances created, updated and deleted between two stored documents."""
    old = before["attrs"] if before is not None else {}
    new = after["attrs"] if after is not None else {}
    change = Change({}, {}, {})
    for attr, instances in new.items():
        prior = old.get(attr)
        if prior is None:
            change.created[attr] = {i.get("datasetId") for i in instances}
        elif prior is not instances and prior != instances:
            was, now = _by_dataset(prior), _by_dataset(instances)
            for key, inst in now.items():
                if key not in was:
                    change.created.setdefault(attr, set()).add(key)
                elif was[key] != inst:
                    change.updated.setdefault(attr, set()).add(key)
            gone = was.keys() - now.keys()
            if gone:
                change.deleted[attr] = set(gone)
    for attr, instances in old.items():
        if attr not in new:
            change.deleted[attr] = {i.get("datasetId") for i in instances}
    return change


def _geometry_matches(geo: GeoQuery, doc: dict[str, Any]) -> bool:
    return any(
        inst.get("type") == "GeoProperty" and geo.matches(inst.get("value"))
        for inst in doc["attrs"].get(geo.geoproperty, ())
    )


def _concerns(watched: frozenset[str] | None, attrs: Keys) -> bool:
    return bool(attrs) and (watched is None or not watched.isdisjoint(attrs))


def _reason(sub: Watching, before: Any, after: Any, change: Change) -> str | None:
    """The notificationTrigger this change fires for the subscription, or None."""
    triggers = sub.triggers
    watched = sub.watched
    if after is None:
        if "entityDeleted" in triggers:
            return "entityDeleted"
        # Deleting an entity deletes its attributes too.
        if "attributeDeleted" in triggers and _concerns(watched, change.deleted):
            return "attributeDeleted"
        return None
    if before is None and "entityCreated" in triggers:
        return "entityCreated"
    for trigger, attrs in (
        ("attributeCreated", change.created),
        ("attributeUpdated", change.updated),
        ("attributeDeleted", change.deleted),
    ):
        if trigger in triggers and _concerns(watched, attrs):
            return trigger
    if before is not None and "entityUpdated" in triggers:
        if any(_concerns(watched, a) for a in (change.created, change.updated, change.deleted)):
            return "entityUpdated"
    return None


def deleted_instance(
    inst: dict[str, Any], now: str, *, previous: bool, dataset: bool = True
) -> dict[str, Any]:
    """How a notification shows a deleted attribute instance (§5.2.14): its type, NGSI-LD Null
    as its value (``{"@none": null}`` for a LanguageProperty, ``[null]`` for lists), its
    datasetId (with ``dataset``), its system times and deletedAt; with ``previous``, the value
    it had."""
    kind = inst["type"]
    member, null = null_value(kind)
    marker: dict[str, Any] = {"type": kind, member: null}
    if "datasetId" in inst and dataset:
        marker["datasetId"] = inst["datasetId"]
    for key in ("createdAt", "modifiedAt"):
        if key in inst:
            marker[key] = inst[key]
    marker["deletedAt"] = now
    if previous:
        marker[PREVIOUS[member]] = inst.get(member)
    return marker


def deleted_attribute(
    instances: list[dict[str, Any]], now: str, *, previous: bool
) -> dict[str, Any]:
    """A whole attribute deleted, every instance at once: one deleted instance, that of the
    default instance (else the first), without datasetId, since the attribute is gone."""
    chosen = next((i for i in instances if "datasetId" not in i), instances[0])
    return deleted_instance(chosen, now, previous=previous, dataset=False)


def notified_entity(
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    change: Change,
    *,
    reason: str,
    watched: frozenset[str] | None,
    show_changes: bool,
    now: str,
) -> dict[str, Any]:
    """The entity a notification carries for one change, in the stored form: as it is after
    the change, with each deleted instance shown as deleted (``deleted_instance``) and, with
    ``show_changes``, the previous value of each updated one. A deleted entity is its id, type,
    system times and deletedAt, with its attributes as deleted instances when the notification
    is about them (attributeDeleted: the watched ones) or shows changes."""
    if after is None:
        assert before is not None
        doc: dict[str, Any] = {"id": before["id"], "type": before["type"], "attrs": {}}
        for key in ("createdAt", "modifiedAt"):
            if key in before:
                doc[key] = before[key]
        doc["deletedAt"] = now
        if reason == "attributeDeleted" or show_changes:
            for attr, instances in before["attrs"].items():
                if reason == "attributeDeleted" and watched is not None and attr not in watched:
                    continue
                doc["attrs"][attr] = [deleted_attribute(instances, now, previous=show_changes)]
        return doc
    if not change.deleted and not (show_changes and before is not None and change.updated):
        return after
    attrs = dict(after["attrs"])
    if show_changes and before is not None:
        for attr, keys in change.updated.items():
            old = _by_dataset(before["attrs"][attr])
            instances = []
            for inst in attrs[attr]:
                prior = old.get(inst.get("datasetId"))
                member = KINDS.get(inst["type"])
                key = inst.get("datasetId")
                if (
                    key in keys
                    and prior is not None
                    and member is not None
                    and prior.get("type") == inst["type"]
                    and prior.get(member) != inst.get(member)
                ):
                    inst = {**inst, PREVIOUS[member]: prior.get(member)}
                instances.append(inst)
            attrs[attr] = instances
    if change.deleted:
        assert before is not None
        for attr, keys in change.deleted.items():
            if attr not in attrs:
                attrs[attr] = [deleted_attribute(before["attrs"][attr], now, previous=show_changes)]
                continue
            gone = [
                deleted_instance(i, now, previous=show_changes)
                for i in before["attrs"][attr]
                if i.get("datasetId") in keys
            ]
            attrs[attr] = [*attrs[attr], *gone]
    return {**after, "attrs": attrs}


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
        changes = attribute_changes(old, new)
        for sub in live:
            if not subscription_matches_entity(sub.doc, eid, doc["type"]):
                continue
            change = changes.only(sub.datasets)
            reason = _reason(sub, old, new, change)
            if reason is None:
                continue
            if sub.q is not None and not evaluate(sub.q, doc):
                continue
            if sub.geo is not None and not _geometry_matches(sub.geo, doc):
                continue
            key = (sub.id, reason)
            if key not in grouped:
                grouped[key] = (sub.lane, [])
            data = notified_entity(
                old,
                new,
                change,
                reason=reason,
                watched=sub.watched,
                show_changes=sub.show_changes,
                now=now,
            )
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
    "Change",
    "OutboxEntry",
    "Watching",
    "attribute_changes",
    "compile_subscription",
    "deleted_instance",
    "match_changes",
    "notified_entity",
    "periodic_entry",
]
