"""store/changes.py: the discovery counters' deltas of a batch add up to a recount."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from cidade.store.base import WriteOp
from cidade.store.changes import apply_ops, count_attributes

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
