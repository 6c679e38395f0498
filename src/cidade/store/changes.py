"""The backend-independent half of a write: apply every operation in memory, then say what
changed. Both stores run this inside their transaction, between reading the current documents
and writing the new rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cidade.ngsild.timefmt import now as now_iso
from cidade.store.base import ChangeWatch, Entity, OutboxEntry, WriteOp
from cidade.store.history import HistoryRow, changed_instances, instance_ids

Stats = Counter[tuple[str, str, str]]  # (type or "", attribute IRI or "", kind or "") -> delta
# One op's change of one entity: (id, its state before the op, after it; None when absent).
Step = tuple[str, "Entity | None", "Entity | None"]


@dataclass
class Applied:
    """What a batch of operations did, for the store to write down."""

    results: list[Any]  # per op: the new entity, None (deleted) or the exception it raised
    changed: list[str]  # ids whose state changed, in first-touched order
    before: dict[str, Entity]  # the stored documents as they were
    after: dict[str, Entity | None] = field(default_factory=dict)  # their new state
    steps: list[Step] = field(default_factory=list)  # every op that did not raise, in order

    def history_steps(self) -> Iterator[Step]:
        """The steps whose instances go to the history: each op is its own change (an entity
        updated twice in one batch gets both instances), except for entities the batch leaves
        deleted, whose history is the store's to forget or keep as it is."""
        for step in self.steps:
            if step[2] is not None and self.after[step[0]] is not None:
                yield step

    def history(self) -> Iterator[tuple[str, HistoryRow]]:
        """(entity id, history row) of every instance the batch adds to the history."""
        ids = instance_ids()
        for eid, old, new in self.history_steps():
            for row in changed_instances(old, new, ids):
                yield eid, row

    def notifications(self, watch: ChangeWatch, watching: list[Any]) -> list[OutboxEntry]:
        """The outbox entries the batch's changes cause, layer after layer."""
        now = now_iso()
        entries: list[OutboxEntry] = []
        for changed, before, after in self.layers():
            entries += watch.match(watching, changed, before, after, now)
        return entries

    def layers(self) -> Iterator[tuple[list[str], dict[str, Entity], dict[str, Entity | None]]]:
        """The steps as successive changes for subscriptions, each entity once per layer:
        (ids, states before, states after), the first change of every entity first; a batch
        touching each entity once is one layer, its ``changed``, ``before`` and ``after``."""
        layers: list[tuple[list[str], dict[str, Entity], dict[str, Entity | None]]] = []
        depth: dict[str, int] = {}
        for eid, old, new in self.steps:
            n = depth.get(eid, 0)
            depth[eid] = n + 1
            if n == len(layers):
                layers.append(([], {}, {}))
            ids, before, after = layers[n]
            ids.append(eid)
            if old is not None:
                before[eid] = old
            after[eid] = new
        yield from layers

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
        applied.steps.append((op.entity_id, state.get(op.entity_id), new))
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
