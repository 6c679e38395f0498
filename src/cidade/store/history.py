"""What a change adds to the history (the NGSI-LD temporal representation's raw material).

Both stores call ``changed_instances(before, after)`` inside the transaction that writes
``after``, so the current state and its history never disagree, whatever crashes when.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson

from cidade.ngsild.null import null_value
from cidade.store.base import Entity

HistoryRow = tuple[str, str, str, str, str | None, str, str, dict[str, Any]]
# (attr IRI, datasetId or "", instanceId, time, observedAt, modifiedAt, createdAt, instance)


INSTANCE_PREFIX = "urn:ngsi-ld:attribute:instance:"
# The IRI the scope's history is kept under, as an attribute's (the core @context's "scope").
SCOPE = "https://uri.etsi.org/ngsi-ld/scope"


def instance_id() -> str:
    # 128 random bits, like a UUID4, without the uuid module's cost (this runs per instance).
    # Not the random module: whoever seeds it (a test, a library) would repeat the ids.
    return f"{INSTANCE_PREFIX}{os.urandom(16).hex()}"


def instance_ids(per_read: int = 256) -> Iterator[str]:
    """New instance ids without end, as ``instance_id`` makes them, from one read of the OS's
    random source per ``per_read`` of them: a batch of device updates needs thousands, and a
    read per id was a twentieth of the store's writer."""
    for suffix in instance_suffixes(per_read):
        yield INSTANCE_PREFIX + suffix


def instance_suffixes(per_read: int = 256) -> Iterator[str]:
    """What follows INSTANCE_PREFIX in new instance ids (``instance_ids``): for a store that
    keeps our ids without their prefix."""
    while True:
        blob = os.urandom(16 * per_read).hex()
        for start in range(0, 32 * per_read, 32):
            yield blob[start : start + 32]


def changed_instances(
    before: Entity | None, after: Entity | None, ids: Iterator[str] | None = None
) -> Iterator[HistoryRow]:
    """Every attribute instance of ``after`` that is new or differs from ``before``: one history
    row each, its id from ``ids`` when it has none. The time index is observedAt when the
    instance has one, else modifiedAt."""
    if after is None:
        return
    now = after["modifiedAt"]
    for attr, inst in changed_in(before, after):
        yield history_row(attr, inst, now, ids)


def changed_in(before: Entity | None, after: Entity) -> Iterator[tuple[str, dict[str, Any]]]:
    """(attribute IRI, instance) of every instance of ``after`` that is new or differs from
    ``before``, and a deletion instance (``deletion``) for every instance of ``before`` that
    ``after`` no longer has: what goes to the history (``history_row`` makes its row)."""
    old_attrs = before["attrs"] if before is not None else {}
    kept = 0  # attributes of before that after still has: fewer than all, some were deleted
    for attr, instances in after["attrs"].items():
        olds = old_attrs.get(attr)
        if olds is None:
            for inst in instances:
                yield attr, inst
            continue
        kept += 1
        if olds is instances:
            continue  # an attribute the change did not touch (updates share such lists)
        if len(olds) == 1 and len(instances) == 1:
            # One instance before and after (a device's measure): compared whole, datasetId
            # and all, as the general case below would.
            if olds[0] != instances[0]:
                yield attr, instances[0]
                if olds[0].get("datasetId") != instances[0].get("datasetId"):
                    yield attr, deletion(olds[0], after["modifiedAt"])
            continue
        old = {i.get("datasetId"): i for i in olds}
        for inst in instances:
            if old.pop(inst.get("datasetId"), None) != inst:
                yield attr, inst
        for gone in old.values():
            yield attr, deletion(gone, after["modifiedAt"])
    if kept < len(old_attrs):
        new_attrs = after["attrs"]
        for attr, olds in old_attrs.items():
            if attr not in new_attrs:
                for gone in olds:
                    yield attr, deletion(gone, after["modifiedAt"])
    # The scope (§4.18) has a temporal evolution as a Property would: its value the scope, and
    # when it is deleted an instance of no scopes ([]) with its deletedAt.
    scope = after.get("scope")
    if scope != (before.get("scope") if before is not None else None):
        if scope is not None:  # as the entity shows it: one scope is a string
            yield SCOPE, {"type": "Property", "value": scope[0] if len(scope) == 1 else scope}
        else:
            now = after["modifiedAt"]
            yield (
                SCOPE,
                {
                    "type": "Property",
                    "value": [],
                    "deletedAt": now,
                    "modifiedAt": now,
                    "createdAt": now,
                },
            )


def deletion(inst: dict[str, Any], now: str) -> dict[str, Any]:
    """The instance that records the deletion of ``inst`` at ``now`` in its attribute's
    history: the NGSI-LD Null in its value member, deletedAt (and its other times) ``now``,
    its datasetId kept, so that the temporal evolution shows when the attribute went away."""
    kind = inst.get("type", "Property")
    member, null = null_value(kind)
    out: dict[str, Any] = {"type": kind, member: null}
    if "datasetId" in inst:
        out["datasetId"] = inst["datasetId"]
    out["deletedAt"] = out["modifiedAt"] = out["createdAt"] = now
    return out


def history_row(
    attr: str, inst: dict[str, Any], now: str, ids: Iterator[str] | None = None
) -> HistoryRow:
    """The history row of one instance; ``now`` stands in for missing system times, ``ids``
    gives its id when it has none."""
    modified = inst.get("modifiedAt") or now
    observed = inst.get("observedAt")
    given = inst.get("instanceId")
    return (
        attr,
        inst.get("datasetId") or "",
        given or (next(ids) if ids is not None else instance_id()),
        observed or modified,
        observed,
        modified,
        inst.get("createdAt") or modified,
        {k: v for k, v in inst.items() if k != "instanceId"} if "instanceId" in inst else inst,
    )


_INT64 = 1 << 63


def numeric_value(inst: dict[str, Any]) -> int | float | None:
    """The number a Property instance holds, kept beside the instance in the history's ``num``
    column so that aggregations read numbers, not JSON; None for anything else."""
    if inst.get("type") == "Property":
        value = inst.get("value")
        kind = type(value)
        if kind is float or (kind is int and -_INT64 <= value < _INT64):  # type: ignore[operator]
            return value  # type: ignore[return-value]
    return None


def value_item(dataset_id: str, t: str, num: Any, instance: Any) -> dict[str, Any]:
    """An instance as an aggregation needs it, from a values-only history read: a number
    (``num``) becomes a bare Property; anything else is the whole instance (JSON text or, from
    PostgreSQL, already decoded)."""
    if num is not None:
        item: dict[str, Any] = {"type": "Property", "value": num, "_t": t}
        if dataset_id:
            item["datasetId"] = dataset_id
        return item
    full = orjson.loads(instance) if isinstance(instance, str | bytes) else instance
    full["_t"] = t
    return full


def history_source(rows: str, column: str, query: Any) -> str:
    """The FROM clause of a history read (both dialects): ``rows`` (a table and its WHERE),
    cut to the first and/or last N instances of each series (entity, attribute, datasetId) by
    window functions only when the query asks for a cut, since a window sorts every row."""
    found = f"FROM {rows}"
    series = "PARTITION BY entity_id, attr, dataset_id"
    windows, keep = [], []
    if query.last_n is not None:
        windows.append(
            f"row_number() OVER ({series} ORDER BY {column} DESC, instance_id DESC) AS back"
        )
        keep.append(f"back <= {int(query.last_n)}")
    if query.first_n is not None:
        windows.append(f"row_number() OVER ({series} ORDER BY {column}, instance_id) AS ahead")
        keep.append(f"ahead <= {int(query.first_n)}")
    if windows:
        found = f"FROM (SELECT *, {', '.join(windows)} {found}) cut WHERE {' AND '.join(keep)}"
    return found
