"""store/changes.py: the discovery counters' deltas of a batch add up to a recount; a batch's
steps, history rows and notification layers; the device update's fast paths."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from cidade.hub.batch import updated_with
from cidade.store.base import WriteOp
from cidade.store.changes import apply_ops, count_attributes
from cidade.store.history import INSTANCE_PREFIX, changed_instances, instance_ids

KINDS = st.sampled_from(["Property", "GeoProperty", "Relationship"])
INSTANCES = st.lists(st.tuples(KINDS, st.integers(0, 3)), min_size=1, max_size=2)
DOCS = st.none() | st.fixed_dictionaries(
    {
        "type": st.lists(st.sampled_from(["A", "B"]), min_size=1, max_size=2, unique=True),
        "attrs": st.dictionaries(st.sampled_from(["x", "y", "z"]), INSTANCES, max_size=3),
    }
)
BATCHES = st.lists(
    st.lists(st.tuples(st.sampled_from(["e1", "e2", "e3"]), DOCS), min_size=1, max_size=4),
    max_size=6,
)


def entity(eid: str, shape: dict | None) -> dict | None:
    if shape is None:
        return None
    attrs = {
        attr: [
            {"type": kind, "value": value, **({"datasetId": f"urn:d:{n}"} if n else {})}
            for n, (kind, value) in enumerate(instances)
        ]
        for attr, instances in shape["attrs"].items()
    }
    return {"id": eid, "type": sorted(shape["type"]), "attrs": attrs}


def setting(doc: dict | None):
    return lambda _current: doc


@settings(max_examples=300, deadline=None)
@given(batches=BATCHES)
def test_deltas_add_up_to_a_recount(batches):
    state: dict[str, dict] = {}
    total: Counter = Counter()
    for batch in batches:
        ops = [WriteOp(eid, setting(entity(eid, shape))) for eid, shape in batch]
        before = {eid: state[eid] for eid, _ in batch if eid in state}
        applied = apply_ops(ops, before)
        total.update(applied.stats())
        for eid, doc in applied.after.items():
            if doc is None:
                state.pop(eid, None)
            else:
                state[eid] = doc
    recount: Counter = Counter()
    for doc in state.values():
        count_attributes(recount, doc, 1)
    assert +total == +recount
    assert all(n >= 0 for n in total.values())


def _doc(eid: str, value: int) -> dict:
    return {"id": eid, "type": ["T"], "attrs": {"x": [{"type": "Property", "value": value}]}}


def _value(doc: dict | None) -> int | None:
    return None if doc is None else doc["attrs"]["x"][0]["value"]


def test_each_op_is_its_own_step_for_history_and_subscriptions():
    def fails(_current):
        raise ValueError("refused")

    ops = [
        WriteOp("a", lambda _c: _doc("a", 1)),
        WriteOp("a", lambda _c: _doc("a", 2)),
        WriteOp("b", lambda _c: _doc("b", 1)),
        WriteOp("b", fails),  # leaves b as it was, and is no step
        WriteOp("c", lambda _c: None),  # deleted
        WriteOp("d", lambda _c: _doc("d", 1)),
        WriteOp("d", lambda _c: None),  # created and deleted in one batch
        WriteOp("a", lambda _c: _doc("a", 3)),
    ]
    applied = apply_ops(ops, {"c": _doc("c", 7)})
    steps = [(e, _value(old), _value(new)) for e, old, new in applied.steps]
    assert steps == [
        ("a", None, 1),
        ("a", 1, 2),
        ("b", None, 1),
        ("c", 7, None),
        ("d", None, 1),
        ("d", 1, None),
        ("a", 2, 3),
    ]
    # History: every step of the entities the batch leaves in place, in order.
    history = [(e, _value(old), _value(new)) for e, old, new in applied.history_steps()]
    assert history == [("a", None, 1), ("a", 1, 2), ("b", None, 1), ("a", 2, 3)]
    # Subscriptions: one change per entity per layer, each with its own before and after.
    layers = [
        (ids, {e: _value(d) for e, d in before.items()}, {e: _value(d) for e, d in after.items()})
        for ids, before, after in applied.layers()
    ]
    assert layers == [
        (["a", "b", "c", "d"], {"c": 7}, {"a": 1, "b": 1, "c": None, "d": 1}),
        (["a", "d"], {"a": 1, "d": 1}, {"a": 2, "d": None}),
        (["a"], {"a": 2}, {"a": 3}),
    ]
    assert [type(r).__name__ for r in applied.results].count("ValueError") == 1


# -- what a device's update costs: the fast paths give what the general ones do ------------------


def _measure(value, at, **extra):
    return {"type": "Property", "value": value, "observedAt": at, "createdAt": at,
            "modifiedAt": at, **extra}  # fmt: skip


def test_an_update_replacing_one_instance_keeps_its_creation_and_leaves_the_current_state():
    first, later = "2026-11-26T08:00:00.000000Z", "2026-11-26T09:00:00.000000Z"
    current = {
        "id": "urn:ngsi-ld:X:1",
        "type": ["T"],
        "createdAt": first,
        "modifiedAt": first,
        "attrs": {
            "a": [_measure(1, first)],
            "b": [_measure(2, first)],
            "m": [_measure(3, first), _measure(4, first, datasetId="urn:d:1")],
        },
    }
    snapshot = copy.deepcopy(current)
    new = {
        "id": "urn:ngsi-ld:X:1",
        "type": ["T", "U"],
        "createdAt": later,
        "modifiedAt": later,
        "attrs": {
            "a": [_measure(10, later)],  # one instance by another: the fast path
            "m": [_measure(40, later, datasetId="urn:d:1")],  # by datasetId: the general one
            "c": [_measure(5, later)],  # a new attribute
        },
    }
    got = updated_with(current, new)
    assert current == snapshot  # nothing of the current state was changed
    assert got["type"] == ["T", "U"]
    assert got["modifiedAt"] == later
    assert got["attrs"]["a"] == [{**_measure(10, later), "createdAt": first}]
    assert got["attrs"]["b"] == snapshot["attrs"]["b"]
    assert got["attrs"]["m"] == [
        _measure(3, first),
        {**_measure(40, later, datasetId="urn:d:1"), "createdAt": first},
    ]
    assert got["attrs"]["c"] == [_measure(5, later)]
    # A default instance replaced by one with a datasetId is added beside it, not over it.
    other = updated_with(got, {**new, "attrs": {"a": [_measure(11, later, datasetId="urn:d:2")]}})
    assert [i.get("datasetId") for i in other["attrs"]["a"]] == [None, "urn:d:2"]


def test_history_rows_of_single_instances_and_fresh_ids():
    at, later = "2026-11-26T08:00:00.000000Z", "2026-11-26T09:00:00.000000Z"
    before = {"modifiedAt": at, "attrs": {"a": [_measure(1, at)], "b": [_measure(2, at)]}}
    after = {
        "modifiedAt": later,
        "attrs": {
            "a": [_measure(1, at)],  # unchanged: no row
            "b": [_measure(2, at, datasetId="urn:d:1")],  # another instance: a row
            "c": [_measure(3, later, instanceId="urn:i:given")],  # new, with its own id
        },
    }
    rows = list(changed_instances(before, after, instance_ids(per_read=2)))
    # b's default instance is gone: a row records its deletion.
    assert [(r[0], r[1]) for r in rows] == [("b", "urn:d:1"), ("b", ""), ("c", "")]
    assert rows[0][2].startswith(INSTANCE_PREFIX) and len(rows[0][2]) == len(INSTANCE_PREFIX) + 32
    assert rows[1][7]["value"] == "urn:ngsi-ld:null" and rows[1][7]["deletedAt"] == later
    assert rows[2][2] == "urn:i:given" and "instanceId" not in rows[2][7]
    ids = list(itertools.islice(instance_ids(per_read=3), 10))  # across several reads
    assert len(set(ids)) == 10 and all(i.startswith(INSTANCE_PREFIX) for i in ids)
