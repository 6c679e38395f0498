"""The backend-independent half of a write: apply every operation in memory, then say what
changed. Both stores run this inside their transaction, between reading the current documents
and writing the new rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cidade.store.base import Entity, WriteOp

Stats = Counter[tuple[str, str, str]]  # (type or "", attribute IRI or "", kind or "") -> delta


@dataclass
class Applied:
    """What a batch of operations did, for the store to write down."""

    results: list[Any]  # per op: the new entity, None (deleted) or the exception it raised
    changed: list[str]  # ids whose state changed, in first-touched order
    before: dict[str, Entity]  # the stored documents as they were
    after: dict[str, Entity | None] = field(default_factory=dict)  # their new state

    def stats(self) -> Stats:
        """The discovery counters' deltas: old documents out, new documents in."""
        stats: Stats = Counter()
        for eid in self.changed:
            old, doc = self.before.get(eid), self.after[eid]
            if old is not None and doc is not None and _same_shape(old, doc):
                continue  # new values in the same attributes (a device's update): no change
            if old is not None:
                count_attributes(stats, old, -1)
            if doc is not None:
                count_attributes(stats, doc, 1)
        return stats


def apply_ops(ops: Sequence[WriteOp], before: dict[str, Entity]) -> Applied:
    """Run each op on the state the previous ops left (a batch may touch one entity twice); an
    op that raises leaves that state as it was."""
    state: dict[str, Entity | None] = dict(before)
    applied = Applied(results=[], changed=[], before=before)
    touched: set[str] = set()
    for op in ops:
        try:
            new = op.apply(state.get(op.entity_id))
        except Exception as exc:
            applied.results.append(exc)
            continue
        state[op.entity_id] = new
        if op.entity_id not in touched:
            touched.add(op.entity_id)
            applied.changed.append(op.entity_id)
        applied.results.append(new)
    applied.after = {eid: state[eid] for eid in applied.changed}
    return applied


def _same_shape(a: Entity, b: Entity) -> bool:
    """Whether two states of an entity count the same: types, attributes, instance kinds."""
    if a["type"] != b["type"]:
        return False
    attrs_a, attrs_b = a["attrs"], b["attrs"]
    if attrs_a.keys() != attrs_b.keys():
        return False
    for attr, instances in attrs_a.items():
        others = attrs_b[attr]
        if len(instances) != len(others):
            return False
        for x, y in zip(instances, others, strict=True):
            if x["type"] != y["type"]:
                return False
    return True


def count_attributes(stats: Stats, doc: Entity, sign: int) -> None:
    """(type, "", "") counts entities of a type; ("", attr, kind) instances of an attribute over
    all entities; (type, attr, kind) instances per type."""
    for t in doc["type"]:
        stats[(t, "", "")] += sign
    for attr, instances in doc["attrs"].items():
        for inst in instances:
            kind = inst["type"]
            stats[("", attr, kind)] += sign
            for t in doc["type"]:
                stats[(t, attr, kind)] += sign
