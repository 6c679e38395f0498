"""The values-only history read (numbers from the history's number column) aggregates exactly
as the full read does, on both stores, whatever the mix of values."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidade.hub.jsonld import ContextResolver
from cidade.hub.temporal import (
    parse_temporal_query,
    render_stats_series,
    render_temporal,
    sql_periods,
)
from cidade.store.base import HistoryQuery
from cidade.store.history import history_row
from tests.conftest import running_store

A = "https://uri.etsi.org/ngsi-ld/default-context/no2"
TERMS = ContextResolver(allow_fetch=False).core

values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([5, 5.0, 0, -0.0, True, False, "x", "2026-01-01", [1, 2], {"a": 1}]),
)
instances = st.lists(
    st.tuples(st.integers(0, 200), values, st.sampled_from([None, None, "urn:ds:1"])),
    min_size=1,
    max_size=30,
)


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def store(request, tmp_path_factory) -> Iterator[tuple[object, asyncio.AbstractEventLoop]]:
    with running_store(request.param, tmp_path_factory.mktemp("h")) as pair:
        yield pair


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=instances, period=st.sampled_from(["PT1H", "PT6H", "P1D"]))
def test_values_only_aggregates_like_the_full_read(store, rows, period):
    backend, loop = store
    eid = f"urn:ngsi-ld:T:{abs(hash((tuple(map(repr, rows)), period)))}"
    history = []
    for n, (minutes, value, dataset) in enumerate(rows):
        at = f"2026-01-01T{minutes // 60:02d}:{minutes % 60:02d}:00.{n:06d}Z"
        inst = {"type": "Property", "value": value, "observedAt": at}
        if dataset:
            inst["datasetId"] = dataset
        history.append(history_row(A, inst, at))
    loop.run_until_complete(backend.add_history("", eid, history))
    temporal = parse_temporal_query(
        {
            "options": "aggregatedValues",
            "aggrMethods": "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq",
            "aggrPeriodDuration": period,
            "timerel": "after",
            "timeAt": "2026-01-01T00:00:00Z",
        },
        require_timerel=True,
    )
    reads = []
    for values_only in (False, True):
        query = HistoryQuery(
            entity_ids=[eid],
            attrs=[A],
            after="2026-01-01T00:00:00.000000Z",
            values_only=values_only,
        )
        found = loop.run_until_complete(backend.history("", query))
        reads.append(render_temporal(eid, ["T"], found.get(eid, {}), TERMS, temporal))
    assert reads[1] == reads[0]
    # and ints stay ints: JSON 5 and 5.0 are told apart as the instances tell them apart
    assert repr(reads[1]) == repr(reads[0])


def close(a, b) -> bool:
    """Equal, floats up to rounding (the store may add in another order), ints and floats
    never confused (JSON 3 is not 3.0)."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([5, 5.0, 0, 0.5, -3]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 1439),
            st.one_of(numbers, numbers, numbers, st.sampled_from(["x", True, None])),
            st.sampled_from([None, None, "urn:ds:1"]),
        ),
        min_size=1,
        max_size=40,
    ),
    period=st.sampled_from(["PT1H", "PT7M", "PT6H", "P1D"]),
    window=st.tuples(st.integers(0, 600), st.integers(601, 1439)),
    last_n=st.sampled_from([None, None, 2]),
    methods=st.sampled_from(
        ["totalCount,distinctCount,sum,avg,min,max,stddev,sumsq", "avg,min,max", "sumsq,stddev"]
    ),
)
def test_store_aggregation_equals_python(store, rows, period, window, last_n, methods):
    """history_stats + render_stats_series (the store aggregates numbers in SQL) give what
    render_temporal gives from every instance, or decline (a non-number in a period)."""
    backend, loop = store
    key = (tuple(map(repr, rows)), period, window, last_n, methods)
    eid = f"urn:ngsi-ld:T:s{abs(hash(key))}"
    history = []
    for n, (minute, value, dataset) in enumerate(rows):
        at = f"2026-01-01T{minute // 60:02d}:{minute % 60:02d}:00.{n:06d}Z"
        inst = {"type": "Property", "value": value, "observedAt": at}
        if value is None:
            inst = {"type": "Property", "value": "urn:ngsi-ld:null", "observedAt": at}
        if dataset:
            inst["datasetId"] = dataset
        history.append(history_row(A, inst, at))
    loop.run_until_complete(backend.add_history("", eid, history))
    lo, hi = window
    params = {
        "options": "aggregatedValues",
        "aggrMethods": methods,
        "aggrPeriodDuration": period,
        "timerel": "between",
        "timeAt": f"2026-01-01T{lo // 60:02d}:{lo % 60:02d}:00Z",
        "endTimeAt": f"2026-01-01T{hi // 60:02d}:{hi % 60:02d}:00Z",
    }
    if last_n:
        params["lastN"] = str(last_n)
    temporal = parse_temporal_query(params, require_timerel=True)
    bounds = sql_periods(temporal)
    assert bounds is not None
    stats = loop.run_until_complete(
        backend.history_stats("", eid, [A], temporal.timeproperty, bounds, temporal.aggr_methods)
    )
    if stats is None:
        # Declined by the store (float8 cannot hold a square of these): the API aggregates
        # the instances in Python instead.
        # or an integer and a float of equal value share a period's min or max.
        return
    lower, upper, _, _ = temporal.time_bounds()
    found = loop.run_until_complete(
        backend.history("", HistoryQuery(entity_ids=[eid], attrs=[A], after=lower, before=upper))
    )
    expected = render_temporal(eid, ["T"], found.get(eid, {}), TERMS, temporal)
    series = [
        render_stats_series(ds or None, stats[A][ds], bounds, temporal)
        for ds in sorted(stats.get(A, {}), key=lambda d: (d != "", d))
    ]
    if any(s is None for s in series):
        # Declined: some period holds a value that is not a number, or one the store keeps
        # only in the instance (PostgreSQL: -0.0, which float8 does not give back as it was).
        assert any(
            not isinstance(v, int | float)
            or isinstance(v, bool)
            or (v == 0 and math.copysign(1.0, v) < 0)
            for m, v, _ in rows
            if lo <= m < hi
        )
        return
    got = {"id": eid, "type": "T"}
    if series:
        got["no2"] = series[0] if len(series) == 1 else series
    assert close(got, expected), (got, expected)
