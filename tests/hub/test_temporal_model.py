"""The temporal API's pure part (ETSI GS CIM 009 §4.11, §4.5.7-§4.5.9, §4.5.19, §6.18, §6.19):
parameter parsing, the normalized, simplified and aggregated representations, period bucketing
and the speed of aggregating a year of 15-minute readings."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cidade.hub.temporal import (
    AGGR_METHODS,
    TemporalQuery,
    parse_aggr_period,
    parse_temporal_query,
    render_temporal,
)
from cidade.ngsild.errors import BadRequestData, InvalidRequest, NgsiError
from cidade.ngsild.timefmt import display, display_all, normalize

V = "https://example.org/"
NGSI = "https://uri.etsi.org/ngsi-ld/"
EID = "urn:ngsi-ld:Sensor:1"


class FakeTerms:
    """Compacts the example vocabulary to bare names; everything else stays an IRI."""

    def expand(self, term: str) -> str:
        return term if ":" in term else V + term

    def compact(self, iri: str) -> str:
        return iri[len(V) :] if iri.startswith(V) else iri

    def expand_vocab_value(self, value: Any) -> Any:
        return value

    def compact_vocab_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.compact(value)
        if isinstance(value, list):
            return [self.compact(v) if isinstance(v, str) else v for v in value]
        return value


TERMS = FakeTerms()


def stored(text: str) -> str:
    """A short time ("2024-01-01T10:00") in the stored format."""
    return datetime.fromisoformat(text).isoformat(timespec="microseconds") + "Z"


def ts(text: str) -> str:
    """A short time ("2024-01-01T10:00") as representations show it (timefmt.display)."""
    return display(stored(text))


def inst(value: Any, at: str, kind: str = "Property", n: int = 0, **extra: Any) -> dict:
    member = {
        "Property": "value",
        "GeoProperty": "value",
        "Relationship": "object",
        "LanguageProperty": "languageMap",
        "VocabProperty": "vocab",
        "ListProperty": "valueList",
        "ListRelationship": "objectList",
        "JsonProperty": "json",
    }[kind]
    t = stored(at)
    out = {"type": kind, member: value, "observedAt": t}
    out.update(extra)
    out.setdefault("createdAt", t)
    out.setdefault("modifiedAt", t)
    out["instanceId"] = f"urn:ngsi-ld:attribute:instance:{n or abs(hash((at, str(value))))}"
    out["_t"] = out.get("_t", t)
    return out


def q(**params: str) -> TemporalQuery:
    return parse_temporal_query(params, require_timerel=False)


def render(history: dict[str, list[dict]], query: TemporalQuery, **kw: Any) -> dict:
    return render_temporal(EID, [V + "Sensor"], history, TERMS, query, **kw)


def aggregated(values: list[Any], methods: str = ",".join(AGGR_METHODS), kind: str = "Property"):
    """One attribute, one day, aggregated over the whole range: {method: value}."""
    history = {
        V + "a": [inst(v, f"2024-01-01T{h:02d}:00", kind, n=h + 1) for h, v in enumerate(values)]
    }
    out = render(history, q(options="aggregatedValues", aggrMethods=methods))["a"]
    return {m: out[m][0][0] for m in methods.split(",")}


def bad(
    params: dict[str, str],
    fragment: str,
    *,
    require_timerel: bool = False,
    error: type[NgsiError] = BadRequestData,
) -> None:
    with pytest.raises(error) as info:
        parse_temporal_query(params, require_timerel=require_timerel)
    assert fragment in info.value.detail, info.value.detail


# -- parsing ------------------------------------------------------------------------------------


def test_defaults():
    query = q()
    assert query == TemporalQuery()
    assert query.timerel is None and query.timeproperty == "observedAt"
    assert query.representation == "normalized" and not query.sys_attrs
    assert query.last_n is None and query.aggr_methods == () and query.aggr_period is None
    assert query.time_bounds() == (None, None, False, False)
    assert query.in_range(ts("1999-01-01T00:00"))


def test_query_entities_requires_timerel_and_time_at():
    bad({}, "mandatory", require_timerel=True)
    bad({"timerel": "after"}, "needs timeAt", require_timerel=True)
    parse_temporal_query(
        {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z"}, require_timerel=True
    )


def test_time_bounds_follow_4_11():
    at, end = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"
    before = q(timerel="before", timeAt=at)
    after = q(timerel="after", timeAt=at)
    between = q(timerel="between", timeAt=at, endTimeAt=end)
    t0, t1 = stored("2024-01-01T00:00"), stored("2024-01-02T00:00")
    # before: exclusive; after: inclusive; between: [timeAt, endTimeAt).
    assert before.time_bounds() == (None, t0, False, False)
    assert after.time_bounds() == (t0, None, True, False)
    assert between.time_bounds() == (t0, t1, True, False)
    assert not before.in_range(t0) and before.in_range(stored("2023-12-31T23:59:59"))
    assert after.in_range(t0) and not after.in_range(stored("2023-12-31T23:59:59"))
    assert between.in_range(t0) and not between.in_range(t1)
    assert between.in_range(stored("2024-01-01T23:59:59.999999"))


@pytest.mark.parametrize(
    ("stored_time", "shown"),
    [
        ("2020-09-01T12:03:00.000000Z", "2020-09-01T12:03:00Z"),
        ("2020-09-01T12:03:00.250000Z", "2020-09-01T12:03:00.250Z"),
        ("2020-09-01T12:03:00.000001Z", "2020-09-01T12:03:00.000001Z"),
        ("2020-09-01T12:03:00.120300Z", "2020-09-01T12:03:00.120300Z"),
    ],
)
def test_representations_show_times_without_a_fraction_of_zeros(stored_time, shown):
    """Clients write whole seconds and compare the times they get back with the ones they sent
    (the ETSI suite compares temporalValues' times as strings): the instant, shortest."""
    assert display(stored_time) == shown
    assert display_all([stored_time, stored_time]) == [shown, shown]
    assert normalize(shown) == stored_time
    history = {V + "a": [inst(1, stored_time[:-1])]}
    assert render(history, q(options="temporalValues"))["a"]["values"] == [[1, shown]]
    assert render(history, q())["a"][0]["observedAt"] == shown


def test_times_are_normalized_to_the_stored_format():
    query = q(timerel="between", timeAt="2024-01-01T01:00:00+01:00", endTimeAt="2024-01-01T12:00")
    assert query.time_at == "2024-01-01T00:00:00.000000Z"
    assert query.end_time_at == "2024-01-01T12:00:00.000000Z"


def test_end_time_at_is_only_for_between():
    query = q(timerel="before", timeAt="2024-01-01T00:00:00Z", endTimeAt="2025-01-01T00:00:00Z")
    assert query.end_time_at is None


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"timerel": "during", "timeAt": "2024-01-01T00:00:00Z"}, "timerel 'during'"),
        ({"timerel": "BEFORE", "timeAt": "2024-01-01T00:00:00Z"}, "timerel 'BEFORE'"),
        ({"timeAt": "2024-01-01T00:00:00Z"}, "timeAt needs timerel"),
        ({"timerel": "before"}, "needs timeAt"),
        ({"timerel": "before", "timeAt": "yesterday"}, "timeAt 'yesterday'"),
        ({"timerel": "between", "timeAt": "2024-01-01T00:00:00Z"}, "needs endTimeAt"),
        (
            {"timerel": "between", "timeAt": "2024-01-01T00:00:00Z", "endTimeAt": "soon"},
            "endTimeAt 'soon'",
        ),
        (
            {"timerel": "between", "timeAt": "2024-01-02T00:00:00Z", "endTimeAt": "2024-01-01"},
            "must be later than timeAt",
        ),
        (
            {
                "timerel": "between",
                "timeAt": "2024-01-01T00:00:00Z",
                "endTimeAt": "2024-01-01T01:00:00+01:00",
            },
            "must be later than timeAt",
        ),
        ({"timeproperty": "observedat"}, "timeproperty 'observedat'"),
        ({"timeproperty": "location"}, "timeproperty 'location'"),
    ],
)
def test_invalid_temporal_query(params, fragment):
    bad(params, fragment)


@pytest.mark.parametrize("prop", ["observedAt", "createdAt", "modifiedAt", "deletedAt"])
def test_timeproperty(prop):
    assert q(timeproperty=prop).timeproperty == prop


def test_last_n():
    assert q(lastN="5").last_n == 5
    assert q(lastN="1").last_n == 1


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "", " 3", "٣", "+2"])
def test_invalid_last_n(value):
    bad({"lastN": value}, "lastN")


@pytest.mark.parametrize(
    ("params", "representation", "sys_attrs"),
    [
        ({"options": "temporalValues"}, "temporalValues", False),
        ({"options": "simplified"}, "temporalValues", False),
        ({"options": "normalized,sysAttrs"}, "normalized", True),
        ({"options": "sysAttrs"}, "normalized", True),
        ({"options": "aggregatedValues", "aggrMethods": "avg"}, "aggregatedValues", False),
        ({"format": "temporalValues"}, "temporalValues", False),
        ({"format": "simplified"}, "temporalValues", False),
        ({"format": "normalized"}, "normalized", False),
        ({"format": "aggregatedValues", "aggrMethods": "sum"}, "aggregatedValues", False),
        # format wins over the representation keywords of options; sysAttrs still counts.
        (
            {"format": "temporalValues", "options": "aggregatedValues,sysAttrs"},
            "temporalValues",
            True,
        ),
    ],
)
def test_representation(params, representation, sys_attrs):
    query = q(**params)
    assert query.representation == representation
    assert query.sys_attrs is sys_attrs
    assert query.simplified is (representation == "temporalValues")
    assert query.aggregated is (representation == "aggregatedValues")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"options": "keyValues"}, "unknown options"),
        ({"options": "temporalValues,concise"}, "unknown options"),
        (
            {"options": "temporalValues,aggregatedValues", "aggrMethods": "avg"},
            "cannot be combined",
        ),
        ({"format": "keyValues"}, "unknown format"),
        ({"format": "concise"}, "unknown format"),
        ({"options": "aggregatedValues"}, "needs aggrMethods"),
        ({"format": "aggregatedValues"}, "needs aggrMethods"),
        ({"options": "aggregatedValues", "aggrMethods": "mean"}, "'mean' is not one of"),
        ({"options": "aggregatedValues", "aggrMethods": "avg,"}, "'' is not one of"),
        ({"options": "aggregatedValues", "aggrMethods": "Avg"}, "'Avg' is not one of"),
        ({"aggrMethods": "median"}, "'median'"),  # invalid even when not applicable
        ({"aggrPeriodDuration": "1D"}, "aggrPeriodDuration '1D'"),
    ],
)
def test_invalid_representation(params, fragment):
    # §6.3.12: values of options or format the operation does not define are invalid requests.
    unknown = fragment.startswith("unknown")
    bad(params, fragment, error=InvalidRequest if unknown else BadRequestData)


def test_aggr_methods_are_kept_in_order_without_duplicates():
    query = q(options="aggregatedValues", aggrMethods="max, avg,max,totalCount")
    assert query.aggr_methods == ("max", "avg", "totalCount")
    every = q(options="aggregatedValues", aggrMethods=",".join(AGGR_METHODS))
    assert every.aggr_methods == AGGR_METHODS


def test_aggregation_parameters_only_apply_to_aggregated_values():
    query = q(aggrMethods="avg", aggrPeriodDuration="P1D")
    assert query.aggr_methods == () and query.aggr_period is None


@pytest.mark.parametrize(
    ("text", "months", "fixed"),
    [
        ("P1D", 0, timedelta(days=1)),
        ("PT15M", 0, timedelta(minutes=15)),
        ("PT1H", 0, timedelta(hours=1)),
        ("PT30S", 0, timedelta(seconds=30)),
        ("PT0.5S", 0, timedelta(milliseconds=500)),
        ("PT1,5H", 0, timedelta(minutes=90)),
        ("P1M", 1, timedelta()),
        ("P1Y", 12, timedelta()),
        ("P2W", 0, timedelta(days=14)),
        ("P1DT12H", 0, timedelta(hours=36)),
        ("P1Y2M", 14, timedelta()),
        ("P3Y6M4DT12H30M5S", 42, timedelta(days=4, hours=12, minutes=30, seconds=5)),
    ],
)
def test_aggr_period_duration(text, months, fixed):
    period = parse_aggr_period(text)
    assert period is not None
    assert (period.text, period.months, period.fixed) == (text, months, fixed)
    query = q(options="aggregatedValues", aggrMethods="avg", aggrPeriodDuration=text)
    assert query.aggr_period == period


@pytest.mark.parametrize("text", ["PT0S", "P0D", "P0Y", "PT0H0M0S", "P0W"])
def test_zero_duration_means_the_whole_range(text):
    assert parse_aggr_period(text) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("P", "not an ISO 8601 duration"),
        ("PT", "not an ISO 8601 duration"),
        ("P1DT", "not an ISO 8601 duration"),
        ("1D", "not an ISO 8601 duration"),
        ("P1.5M", "not an ISO 8601 duration"),
        ("P1W2D", "not an ISO 8601 duration"),
        ("-P1D", "not an ISO 8601 duration"),
        ("p1d", "not an ISO 8601 duration"),
        ("P1H", "not an ISO 8601 duration"),
        ("PT1D", "not an ISO 8601 duration"),
        ("P0001-02-03T00:00:00", "not an ISO 8601 duration"),
        ("P1D ", "not an ISO 8601 duration"),
        ("PT0.0000001S", "shorter than a microsecond"),
        ("P99999999Y", "too long"),
        ("P999999999999D", "too long"),
    ],
)
def test_invalid_aggr_period_duration(text, fragment):
    bad({"aggrPeriodDuration": text}, fragment)


# -- normalized ---------------------------------------------------------------------------------


def test_normalized_instances_in_time_order_without_system_members():
    history = {
        V + "temperature": [
            inst(21.5, "2024-01-01T12:05", n=2, unitCode="CEL"),
            inst(20.0, "2024-01-01T12:00", n=1, unitCode="CEL"),
        ]
    }
    out = render(history, q())
    assert out["id"] == EID and out["type"] == "Sensor"
    assert out["temperature"] == [
        {
            "type": "Property",
            "value": 20.0,
            "observedAt": ts("2024-01-01T12:00"),
            "unitCode": "CEL",
            "instanceId": "urn:ngsi-ld:attribute:instance:1",
        },
        {
            "type": "Property",
            "value": 21.5,
            "observedAt": ts("2024-01-01T12:05"),
            "unitCode": "CEL",
            "instanceId": "urn:ngsi-ld:attribute:instance:2",
        },
    ]


def test_normalized_sys_attrs_and_sub_attributes():
    sub = {
        "type": "Property",
        "value": 0.1,
        "createdAt": ts("2024-01-01T00:00"),
        "modifiedAt": ts("2024-01-01T00:00"),
        V + "method": {"type": "VocabProperty", "vocab": V + "Calibrated"},
    }
    history = {
        V + "temperature": [inst(20, "2024-01-01T12:00", n=1, **{V + "accuracy": sub})],
        V + "owner": [
            inst(
                "urn:ngsi-ld:Person:1", "2024-01-01T12:00", "Relationship", objectType=V + "Person"
            )
        ],
        V + "status": [inst(V + "Ok", "2024-01-01T12:00", "VocabProperty")],
    }
    plain = render(history, q())
    accuracy = plain["temperature"][0]["accuracy"]
    assert accuracy == {
        "type": "Property",
        "value": 0.1,
        "method": {"type": "VocabProperty", "vocab": "Calibrated"},
    }
    assert plain["owner"][0]["objectType"] == "Person"
    assert plain["status"][0]["vocab"] == "Ok"
    assert "createdAt" not in plain["temperature"][0]

    full = render(history, q(options="sysAttrs"))
    first = full["temperature"][0]
    assert first["createdAt"] == first["modifiedAt"] == ts("2024-01-01T12:00")
    assert first["accuracy"]["createdAt"] == ts("2024-01-01T00:00")


def test_normalized_shows_the_queried_time_property_and_deletions():
    history = {
        V + "temperature": [
            inst(20, "2024-01-01T12:00", n=1),
            inst(
                "urn:ngsi-ld:null",
                "2024-01-01T13:00",
                n=2,
                deletedAt=ts("2024-01-01T13:00"),
                _t=ts("2024-01-01T13:00"),
            ),
        ]
    }
    out = render(history, q(timeproperty="modifiedAt"))["temperature"]
    assert out[0]["modifiedAt"] == ts("2024-01-01T12:00")  # queried: shown without sysAttrs
    assert "createdAt" not in out[0]
    assert out[1]["value"] == "urn:ngsi-ld:null"
    assert out[1]["deletedAt"] == ts("2024-01-01T13:00")


def test_time_range_and_last_n_applied_even_if_the_store_did_not():
    history = {V + "a": [inst(h, f"2024-01-01T{h:02d}:00", n=h + 1) for h in range(10)]}
    between = q(timerel="between", timeAt="2024-01-01T02:00:00Z", endTimeAt="2024-01-01T06:00:00Z")
    assert [i["value"] for i in render(history, between)["a"]] == [2, 3, 4, 5]
    before = q(timerel="before", timeAt="2024-01-01T02:00:00Z")
    assert [i["value"] for i in render(history, before)["a"]] == [0, 1]
    after = q(timerel="after", timeAt="2024-01-01T08:00:00Z")
    assert [i["value"] for i in render(history, after)["a"]] == [8, 9]
    last = q(timerel="after", timeAt="2024-01-01T02:00:00Z", lastN="3")
    assert [i["value"] for i in render(history, last)["a"]] == [7, 8, 9]
    # Idempotent: a history the store already cut renders the same.
    cut = {V + "a": history[V + "a"][7:]}
    assert render(cut, last) == render(history, last)


def test_attrs_restriction_and_empty_attributes_omitted():
    history = {
        V + "a": [inst(1, "2024-01-01T00:00")],
        V + "b": [inst(2, "2024-01-01T00:00")],
        V + "c": [],
        V + "d": [inst(3, "2023-01-01T00:00")],
    }
    out = render(history, q(timerel="after", timeAt="2024-01-01T00:00:00Z"))
    assert set(out) == {"id", "type", "a", "b"}
    only = render(history, q(), attrs=[V + "b", V + "missing"])
    assert set(only) == {"id", "type", "b"}


def test_multiple_types_are_compacted():
    out = render_temporal(EID, [V + "A", "urn:x:B"], {}, TERMS, q())
    assert out == {"id": EID, "type": ["A", "urn:x:B"]}


def test_instances_without_t_use_the_time_property_member():
    raw = inst(1, "2024-01-01T00:00")
    del raw["_t"]
    no_time = {"type": "Property", "value": 2}
    out = render({V + "a": [raw, no_time]}, q())
    assert [i["value"] for i in out["a"]] == [1]


def test_several_dataset_ids_normalized():
    history = {
        V + "speed": [
            inst(1, "2024-01-01T00:00", n=1, datasetId="urn:ds:gps"),
            inst(2, "2024-01-01T00:10", n=2),
            inst(3, "2024-01-01T00:05", n=3, datasetId="urn:ds:gps"),
            inst(4, "2024-01-01T00:20", n=4, datasetId="urn:ds:radar"),
            inst(5, "2024-01-01T00:30", n=5, datasetId="urn:ds:gps"),
        ]
    }
    out = render(history, q())["speed"]
    assert [i["value"] for i in out] == [1, 3, 2, 4, 5]
    assert [i.get("datasetId") for i in out] == [
        "urn:ds:gps",
        "urn:ds:gps",
        None,
        "urn:ds:radar",
        "urn:ds:gps",
    ]
    # lastN per datasetId: each series keeps its own last instances.
    last = render(history, q(lastN="1"))["speed"]
    assert [i["value"] for i in last] == [2, 4, 5]


# -- simplified (temporalValues) ----------------------------------------------------------------


def test_temporal_values_for_every_attribute_type():
    point = {"type": "Point", "coordinates": [-8.61, 41.15]}
    history = {
        V + "p": [inst(2, "2024-01-01T01:00"), inst(1, "2024-01-01T00:00")],
        V + "g": [inst(point, "2024-01-01T00:00", "GeoProperty")],
        V + "r": [inst(["urn:a:1", "urn:a:2"], "2024-01-01T00:00", "Relationship")],
        V + "l": [inst({"pt": "rua", "en": "street"}, "2024-01-01T00:00", "LanguageProperty")],
        V + "v": [inst(V + "Male", "2024-01-01T00:00", "VocabProperty")],
        V + "lp": [inst(["First", "Second"], "2024-01-01T00:00", "ListProperty")],
        V + "lr": [
            inst([{"object": "urn:a:1"}, "urn:a:2"], "2024-01-01T00:00", "ListRelationship")
        ],
        V + "j": [inst([{"id": "x", "@type": "y"}], "2024-01-01T00:00", "JsonProperty")],
    }
    out = render(history, q(options="temporalValues"))
    t0, t1 = ts("2024-01-01T00:00"), ts("2024-01-01T01:00")
    assert out["p"] == {"type": "Property", "values": [[1, t0], [2, t1]]}
    assert out["g"] == {"type": "GeoProperty", "values": [[point, t0]]}
    assert out["r"] == {"type": "Relationship", "objects": [[["urn:a:1", "urn:a:2"], t0]]}
    assert out["l"] == {
        "type": "LanguageProperty",
        "languageMaps": [[{"languageMap": {"pt": "rua", "en": "street"}}, t0]],
    }
    assert out["v"] == {"type": "VocabProperty", "vocabs": [[{"vocab": "Male"}, t0]]}
    assert out["lp"] == {"type": "ListProperty", "valueLists": [[["First", "Second"], t0]]}
    assert out["lr"] == {"type": "ListRelationship", "objectLists": [[["urn:a:1", "urn:a:2"], t0]]}
    assert out["j"] == {
        "type": "JsonProperty",
        "jsons": [[{"json": [{"id": "x", "@type": "y"}]}, t0]],
    }


def test_temporal_values_use_the_queried_time_property():
    raw = inst(1, "2024-01-01T00:00", modifiedAt=ts("2024-05-01T00:00"), _t=ts("2024-05-01T00:00"))
    out = render({V + "a": [raw]}, q(options="temporalValues", timeproperty="modifiedAt"))
    assert out["a"]["values"] == [[1, ts("2024-05-01T00:00")]]


def test_temporal_values_several_dataset_ids():
    history = {
        V + "speed": [
            inst(1, "2024-01-01T00:00", datasetId="urn:ds:radar"),
            inst(2, "2024-01-01T00:10"),
            inst(3, "2024-01-01T00:05", datasetId="urn:ds:gps"),
            inst(4, "2024-01-01T00:20", datasetId="urn:ds:gps"),
        ]
    }
    out = render(history, q(format="temporalValues"))["speed"]
    assert out == [
        {"type": "Property", "values": [[2, ts("2024-01-01T00:10")]]},
        {
            "type": "Property",
            "datasetId": "urn:ds:gps",
            "values": [[3, ts("2024-01-01T00:05")], [4, ts("2024-01-01T00:20")]],
        },
        {"type": "Property", "datasetId": "urn:ds:radar", "values": [[1, ts("2024-01-01T00:00")]]},
    ]
    last = render(history, q(format="temporalValues", lastN="1"))["speed"]
    assert [s["values"] for s in last] == [
        [[2, ts("2024-01-01T00:10")]],
        [[4, ts("2024-01-01T00:20")]],
        [[1, ts("2024-01-01T00:00")]],
    ]
    single = render(
        {V + "a": [inst(1, "2024-01-01T00:00", datasetId="urn:ds:x")]}, q(format="simplified")
    )
    assert single["a"] == {
        "type": "Property",
        "datasetId": "urn:ds:x",
        "values": [[1, ts("2024-01-01T00:00")]],
    }


def test_temporal_values_when_the_attribute_type_changed_or_was_deleted():
    history = {
        V + "a": [
            inst(1, "2024-01-01T00:00"),
            inst("urn:a:1", "2024-01-01T01:00", "Relationship"),
            {
                "type": "Relationship",
                "deletedAt": ts("2024-01-01T02:00"),
                "_t": ts("2024-01-01T02:00"),
            },
        ]
    }
    out = render(history, q(options="temporalValues"))["a"]
    # Named after the latest type; each instance gives its own value; a deletion gives null.
    assert out == {
        "type": "Relationship",
        "objects": [
            [1, ts("2024-01-01T00:00")],
            ["urn:a:1", ts("2024-01-01T01:00")],
            ["urn:ngsi-ld:null", ts("2024-01-01T02:00")],
        ],
    }


# -- aggregated: methods ------------------------------------------------------------------------


def test_every_method_on_numbers():
    out = aggregated([1, 2, 4, 7])
    assert out["totalCount"] == 4
    assert out["distinctCount"] == 4
    assert out["sum"] == 14
    assert out["avg"] == 3.5
    assert out["min"] == 1 and out["max"] == 7
    assert out["sumsq"] == 1 + 4 + 16 + 49
    # Sample standard deviation: deviations -2.5 -1.5 0.5 3.5, squares sum 21, / (4 - 1).
    assert out["stddev"] == pytest.approx(math.sqrt(7))


def test_floats_and_repeated_values():
    out = aggregated([20.5, 21.0, 20.5, 22.0])
    assert out["distinctCount"] == 3
    assert out["sum"] == pytest.approx(84.0)
    assert out["avg"] == pytest.approx(21.0)
    assert out["sumsq"] == pytest.approx(20.5**2 * 2 + 21.0**2 + 22.0**2)
    assert out["stddev"] == pytest.approx(math.sqrt((0.25 + 0 + 0.25 + 1) / 3))


def test_stddev_of_a_single_value_is_undefined():
    out = aggregated([5])
    assert out["stddev"] is None
    assert out["avg"] == 5 and out["sumsq"] == 25


def test_stddev_is_accurate_for_large_values_with_small_spread():
    out = aggregated([1e9 + 1, 1e9 + 2, 1e9 + 3], "stddev")
    assert out["stddev"] == pytest.approx(1.0)


def test_booleans_count_as_one_and_zero():
    out = aggregated([True, False, True])
    assert out["sum"] == 2 and out["avg"] == pytest.approx(2 / 3)
    assert out["min"] == 0 and out["max"] == 1
    assert out["sumsq"] == 2
    assert out["stddev"] == pytest.approx(math.sqrt(1 / 3))
    assert out["distinctCount"] == 2 and out["totalCount"] == 3


def test_strings_min_max_lexicographic_and_counts_only():
    out = aggregated(["b", "a", "c", "a"])
    assert out["min"] == "a" and out["max"] == "c"
    assert out["distinctCount"] == 3 and out["totalCount"] == 4
    assert out["sum"] is None and out["avg"] is None
    assert out["stddev"] is None and out["sumsq"] is None


def test_arrays_use_their_sizes():
    out = aggregated([[1, 2], [1], [1, 2, 3]])
    assert out["sum"] == 6 and out["avg"] == 2
    assert out["min"] == 1 and out["max"] == 3
    assert out["stddev"] is None and out["sumsq"] is None  # N/A for arrays (Table 4.5.19.1-1)
    assert out["distinctCount"] == 3


def test_list_property_uses_list_sizes():
    out = aggregated([["a"], ["a", "b"], ["a"]], kind="ListProperty")
    assert out["sum"] == 4 and out["max"] == 2 and out["min"] == 1
    assert out["distinctCount"] == 2


def test_objects_only_count():
    out = aggregated([{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 3}])
    assert out["totalCount"] == 3 and out["distinctCount"] == 2  # key order does not matter
    assert all(out[m] is None for m in ("sum", "avg", "min", "max", "stddev", "sumsq"))


def test_non_numbers_are_ignored_by_numeric_methods():
    out = aggregated([1, "x", 3, None, {"k": 1}])
    assert out["sum"] == 4 and out["avg"] == 2 and out["min"] == 1 and out["max"] == 3
    assert out["totalCount"] == 5


def test_distinct_count_keeps_json_types_apart():
    # JSON true and 1 are different values; 1 and 1.0 are the same number.
    assert aggregated([1, True, 1.0, "1"], "distinctCount")["distinctCount"] == 3


def test_date_time_literals():
    values = [
        {"@type": "DateTime", "@value": "2024-03-01T10:00:00+02:00"},  # 08:00Z
        {"@type": "DateTime", "@value": "2024-03-01T09:00:00Z"},
        {"@type": "https://uri.etsi.org/ngsi-ld/DateTime", "@value": "2024-03-01T07:30:00Z"},
    ]
    out = aggregated(values)
    assert out["min"] == values[2] and out["max"] == values[1]
    assert out["avg"] is None and out["sum"] is None  # N/A for DateTime (Table 4.5.19.1-2)
    assert out["distinctCount"] == 3


def test_time_literals_average():
    values = [{"@type": "Time", "@value": "08:00:00"}, {"@type": "Time", "@value": "10:30:00"}]
    out = aggregated(values, "avg,min,max")
    assert out["avg"] == {"@type": "Time", "@value": "09:15:00"}
    assert out["min"] == values[0] and out["max"] == values[1]


def test_relationships_only_count():
    out = aggregated(["urn:a:1", "urn:a:2", "urn:a:1"], kind="Relationship")
    assert out["totalCount"] == 3 and out["distinctCount"] == 2
    assert all(out[m] is None for m in ("sum", "avg", "min", "max", "stddev", "sumsq"))


def test_deletions_count_as_updates_only():
    out = aggregated([3, "urn:ngsi-ld:null", 5], "totalCount,distinctCount,min,max,avg")
    assert out == {"totalCount": 3, "distinctCount": 2, "min": 3, "max": 5, "avg": 4}
    only = aggregated(["urn:ngsi-ld:null"], "totalCount,distinctCount,min")
    assert only == {"totalCount": 1, "distinctCount": 0, "min": None}


# -- aggregated: periods ------------------------------------------------------------------------


def test_annex_c_5_14_example():
    history = {
        V + "speed": [
            inst(120, "2018-08-01T12:03"),
            inst(80, "2018-08-01T12:05"),
            inst(100, "2018-08-01T12:07"),
        ]
    }
    query = q(
        timerel="between",
        timeAt="2018-08-01T12:00:00Z",
        endTimeAt="2018-08-01T13:00:00Z",
        aggrMethods="max,avg",
        aggrPeriodDuration="PT4M",
        format="aggregatedValues",
    )
    t = ts
    assert render(history, query)["speed"] == {
        "type": "Property",
        "max": [
            [120, t("2018-08-01T12:00"), t("2018-08-01T12:04")],
            [100, t("2018-08-01T12:04"), t("2018-08-01T12:08")],
        ],
        "avg": [
            [120, t("2018-08-01T12:00"), t("2018-08-01T12:04")],
            [90, t("2018-08-01T12:04"), t("2018-08-01T12:08")],
        ],
    }


def daily(**params: str) -> TemporalQuery:
    return q(options="aggregatedValues", aggrMethods="totalCount,sum", **params)


def test_p1d_periods_start_at_time_at_and_skip_empty_days():
    history = {
        V + "a": [
            inst(1, "2024-01-01T06:00"),
            inst(2, "2024-01-01T05:59:59.999999"),  # day of 2024-01-01T06:00 - 1 µs: previous
            inst(3, "2024-01-02T05:59"),
            inst(4, "2024-01-04T07:00"),
        ]
    }
    query = daily(
        timerel="between",
        timeAt="2024-01-01T06:00:00Z",
        endTimeAt="2024-01-05T06:00:00Z",
        aggrPeriodDuration="P1D",
    )
    out = render(history, query)["a"]
    # Periods align on timeAt; the instance before timeAt is out of range; empty days omitted.
    assert out["sum"] == [
        [4, ts("2024-01-01T06:00"), ts("2024-01-02T06:00")],
        [4, ts("2024-01-04T06:00"), ts("2024-01-05T06:00")],
    ]
    assert [c[0] for c in out["totalCount"]] == [2, 1]


def test_pt1h_periods():
    history = {
        V + "a": [inst(m, f"2024-01-01T{h:02d}:{m:02d}") for h in (0, 1, 3) for m in (0, 30, 59)]
    }
    query = daily(timerel="after", timeAt="2024-01-01T00:00:00Z", aggrPeriodDuration="PT1H")
    out = render(history, query)["a"]
    assert out["sum"] == [
        [89, ts("2024-01-01T00:00"), ts("2024-01-01T01:00")],
        [89, ts("2024-01-01T01:00"), ts("2024-01-01T02:00")],
        [89, ts("2024-01-01T03:00"), ts("2024-01-01T04:00")],
    ]


def test_last_period_is_cut_at_the_end_of_the_range():
    history = {V + "a": [inst(1, "2024-01-01T00:50")]}
    query = daily(
        timerel="between",
        timeAt="2024-01-01T00:00:00Z",
        endTimeAt="2024-01-01T01:00:00Z",
        aggrPeriodDuration="PT45M",
    )
    assert render(history, query)["a"]["sum"] == [
        [1, ts("2024-01-01T00:45"), ts("2024-01-01T01:00")]
    ]


def test_p1m_periods_follow_month_lengths():
    history = {
        V + "a": [
            inst(1, "2024-01-15T00:00"),
            inst(2, "2024-01-31T23:59:59.999999"),
            inst(3, "2024-02-01T00:00"),
            inst(4, "2024-02-29T23:59:59.999999"),  # leap day: still February
            inst(5, "2024-03-01T00:00"),
            inst(6, "2024-04-30T12:00"),
        ]
    }
    query = daily(timerel="after", timeAt="2024-01-01T00:00:00Z", aggrPeriodDuration="P1M")
    out = render(history, query)["a"]
    assert out["sum"] == [
        [3, ts("2024-01-01T00:00"), ts("2024-02-01T00:00")],
        [7, ts("2024-02-01T00:00"), ts("2024-03-01T00:00")],
        [5, ts("2024-03-01T00:00"), ts("2024-04-01T00:00")],
        [6, ts("2024-04-01T00:00"), ts("2024-05-01T00:00")],
    ]


def test_p1m_from_a_month_end_does_not_drift():
    # Periods are origin + k months: Jan 31, Feb 29, Mar 31, Apr 30 (not Mar 29, Apr 29).
    history = {
        V + "a": [
            inst(1, "2024-01-31T10:00"),
            inst(2, "2024-02-29T09:59"),
            inst(3, "2024-02-29T10:00"),
            inst(4, "2024-03-31T09:00"),
            inst(5, "2024-04-29T12:00"),
        ]
    }
    out = render(history, daily(aggrPeriodDuration="P1M"))["a"]  # no timerel: first instance
    assert out["sum"] == [
        [3, ts("2024-01-31T10:00"), ts("2024-02-29T10:00")],
        [7, ts("2024-02-29T10:00"), ts("2024-03-31T10:00")],
        [5, ts("2024-03-31T10:00"), ts("2024-04-30T10:00")],
    ]


def test_p1y_periods_from_a_leap_day():
    history = {V + "a": [inst(1, "2024-02-29T00:00"), inst(2, "2025-03-01T00:00")]}
    out = render(history, daily(aggrPeriodDuration="P1Y"))["a"]
    assert out["sum"] == [
        [1, ts("2024-02-29T00:00"), ts("2025-02-28T00:00")],
        [2, ts("2025-02-28T00:00"), ts("2026-02-28T00:00")],
    ]


def test_calendar_periods_with_a_fixed_part():
    # Period k starts at origin + k months + 15k days: Jan 1, Feb 16, Mar 31, May 16.
    days = ["2024-01-01", "2024-02-15", "2024-02-16", "2024-04-01"]
    history = {V + "a": [inst(k, f"{d}T00:00") for k, d in enumerate(days)]}
    query = daily(timerel="after", timeAt="2024-01-01T00:00:00Z", aggrPeriodDuration="P1M15D")
    assert render(history, query)["a"]["sum"] == [
        [1, ts("2024-01-01T00:00"), ts("2024-02-16T00:00")],
        [2, ts("2024-02-16T00:00"), ts("2024-03-31T00:00")],
        [3, ts("2024-03-31T00:00"), ts("2024-05-16T00:00")],
    ]


def test_whole_range_by_default_and_with_pt0s():
    history = {V + "a": [inst(1, "2024-01-01T10:00"), inst(2, "2024-01-03T10:00")]}
    bounds = {
        "timerel": "between",
        "timeAt": "2024-01-01T00:00:00Z",
        "endTimeAt": "2024-02-01T00:00:00Z",
    }
    default = render(history, daily(**bounds))["a"]
    assert default["sum"] == [[3, ts("2024-01-01T00:00"), ts("2024-02-01T00:00")]]
    assert render(history, daily(aggrPeriodDuration="PT0S", **bounds))["a"] == default
    # Without a time range: from the first to the last instance.
    unbounded = render(history, daily())["a"]
    assert unbounded["sum"] == [[3, ts("2024-01-01T10:00"), ts("2024-01-03T10:00")]]
    before = render(history, daily(timerel="before", timeAt="2024-01-05T00:00:00Z"))["a"]
    assert before["sum"] == [[3, ts("2024-01-01T10:00"), ts("2024-01-05T00:00")]]


def test_attributes_share_the_periods_of_their_entity():
    history = {
        V + "a": [inst(1, "2024-01-01T10:00"), inst(2, "2024-01-02T11:00")],
        V + "b": [inst(5, "2024-01-02T09:00")],
    }
    out = render(history, daily(aggrPeriodDuration="P1D"))
    # Both start at the entity's first instance (a, 2024-01-01T10:00).
    assert out["b"]["sum"] == [[5, ts("2024-01-01T10:00"), ts("2024-01-02T10:00")]]
    assert out["a"]["sum"][1] == [2, ts("2024-01-02T10:00"), ts("2024-01-03T10:00")]
    # An origin from the caller (e.g. the same for every entity of a query) takes over.
    aligned = render(history, daily(aggrPeriodDuration="P1D"), origin=ts("2024-01-01T00:00"))
    assert aligned["b"]["sum"] == [[5, ts("2024-01-02T00:00"), ts("2024-01-03T00:00")]]


def test_last_n_keeps_the_last_periods():
    history = {V + "a": [inst(d, f"2024-01-{d:02d}T12:00") for d in range(1, 11)]}
    query = daily(
        timerel="after", timeAt="2024-01-01T00:00:00Z", aggrPeriodDuration="P1D", lastN="3"
    )
    out = render(history, query)["a"]
    assert out["sum"] == [
        [8, ts("2024-01-08T00:00"), ts("2024-01-09T00:00")],
        [9, ts("2024-01-09T00:00"), ts("2024-01-10T00:00")],
        [10, ts("2024-01-10T00:00"), ts("2024-01-11T00:00")],
    ]


def test_aggregated_several_dataset_ids():
    history = {
        V + "speed": [
            inst(10, "2024-01-01T00:00", datasetId="urn:ds:gps"),
            inst(20, "2024-01-01T01:00", datasetId="urn:ds:gps"),
            inst(7, "2024-01-01T00:30"),
        ]
    }
    out = render(history, q(options="aggregatedValues", aggrMethods="avg"))["speed"]
    assert out == [
        {"type": "Property", "avg": [[7, ts("2024-01-01T00:00"), ts("2024-01-01T01:00")]]},
        {
            "type": "Property",
            "datasetId": "urn:ds:gps",
            "avg": [[15, ts("2024-01-01T00:00"), ts("2024-01-01T01:00")]],
        },
    ]


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(
        st.integers(min_value=0, max_value=10 * 86_400_000_000), min_size=1, max_size=60
    ),
    period=st.sampled_from(
        ["PT1S", "PT15M", "PT1H", "P1D", "P1W", "P1M", "P1Y", "P1DT1H", "P1M1D"]
    ),
)
def test_every_instance_lands_in_the_period_that_holds_it(offsets, period):
    base = datetime(2024, 1, 31, 10, 0)
    history = {
        V + "a": [
            inst(1, (base + timedelta(microseconds=o)).isoformat(), n=k + 1)
            for k, o in enumerate(offsets)
        ]
    }
    query = q(options="aggregatedValues", aggrMethods="totalCount", aggrPeriodDuration=period)
    # Shown times in the stored format again, to compare them as strings.
    out = [
        [n, normalize(start), normalize(end)]
        for n, start, end in render(history, query)["a"]["totalCount"]
    ]
    assert sum(c[0] for c in out) == len(offsets)
    starts = [c[1] for c in out]
    assert starts == sorted(set(starts))
    times = sorted(i["_t"] for i in history[V + "a"])
    position = 0
    for count, start, end in out:
        assert start < end
        for t in times[position : position + count]:
            assert start <= t < end
        position += count


# -- a year of readings ----------------------------------------------------------------------


def test_a_year_of_15_minute_readings_aggregates_into_its_365_days():
    # How fast this is, is measured by bench/run.py (--only temporal), not here.
    base = datetime(2025, 1, 1)
    instances = []
    for k in range(35_040):
        t = (base + timedelta(minutes=15 * k)).isoformat(timespec="microseconds") + "Z"
        instances.append(
            {
                "type": "Property",
                "value": 15.0 + (k % 96) * 0.125 + (k % 7),
                "observedAt": t,
                "unitCode": "CEL",
                "createdAt": t,
                "modifiedAt": t,
                "instanceId": f"urn:ngsi-ld:attribute:instance:{k}",
                "_t": t,
            }
        )
    history = {V + "temperature": instances}
    query = parse_temporal_query(
        {
            "timerel": "between",
            "timeAt": "2025-01-01T00:00:00Z",
            "endTimeAt": "2026-01-01T00:00:00Z",
            "options": "aggregatedValues",
            "aggrMethods": ",".join(AGGR_METHODS),
            "aggrPeriodDuration": "P1D",
        },
        require_timerel=True,
    )
    out = render(history, query)
    assert len(out["temperature"]["avg"]) == 365
    assert out["temperature"]["totalCount"][0] == [
        96,
        ts("2025-01-01T00:00"),
        ts("2025-01-02T00:00"),
    ]
