"""The temporal API, storage-independent part: parameters in, temporal representations out.

``parse_temporal_query`` checks the query parameters of "Retrieve / Query Temporal Evolution of
Entities" (ETSI GS CIM 009 §5.7.3, §5.7.4, §6.18.3.2, §6.19.3.1) and the temporal query language
(§4.11). ``render_temporal`` turns the history of one entity, as the store hands it over, into the
representation the client asked for:

* normalized (§4.5.7, §4.5.8): each attribute an array of instances;
* simplified, ``temporalValues`` (§4.5.9): ``{"type": ..., "values": [[value, time], ...]}``;
* aggregated, ``aggregatedValues`` (§4.5.19): ``{"type": ..., "<method>": [[v, start, end], ...]}``.

The history of an attribute is a list of instances in the stored instance shape
(docs/stored-form.md) with two extra members: ``instanceId`` (a URI) and ``_t``, the instance's
time on the requested time property, in the stored timestamp format (timefmt). Because every
stored timestamp has that one fixed-width UTC format, times are compared as strings throughout;
they are parsed only at period boundaries.

Readings of the specification this module makes (v1.9.1 text):

* §4.11: before is t < timeAt, after is t >= timeAt, between is timeAt <= t < endTimeAt.
* lastN counts per attribute and datasetId (each datasetId is a series of its own); in the
  aggregated representation it keeps the last N periods, not the last N instances.
* Aggregation periods start at timeAt (after, between; §C.5.14), else at the entity's first
  instance; period k starts at origin + k x duration (calendar months via relativedelta). Only
  periods holding instances are listed (§C.5.14); the last one is cut at the end of the range.
  Without aggrPeriodDuration, or with a zero one, one period spans the whole range (§6.18.3.2).
* A method that does not apply (Tables 4.5.19.1-1 to -3: avg of strings, sum of a
  Relationship, ...) gives null for that period. stddev is the sample standard deviation.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import repeat
from operator import mul, sub
from typing import Any

import orjson
from dateutil.relativedelta import relativedelta

from cidade.hub.model import KINDS, NULL, VALUE_MEMBERS, Terms
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, InvalidRequest
from cidade.ngsild.timefmt import display, display_all

TIMERELS = ("before", "after", "between")
TIME_PROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
AGGR_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")

NORMALIZED = "normalized"
TEMPORAL_VALUES = "temporalValues"
AGGREGATED_VALUES = "aggregatedValues"

# §4.5.9: the member holding the [value, time] pairs, by attribute type.
SIMPLIFIED_MEMBERS = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "VocabProperty": "vocabs",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
    "JsonProperty": "jsons",
}

# `format` values (1.8+) and `options` keywords that pick a temporal representation. "simplified"
# is the 1.8 name of the simplified representations, so it means temporalValues here.
_REPRESENTATIONS = {
    NORMALIZED: NORMALIZED,
    TEMPORAL_VALUES: TEMPORAL_VALUES,
    "simplified": TEMPORAL_VALUES,
    AGGREGATED_VALUES: AGGREGATED_VALUES,
}
_OPTIONS = frozenset({*_REPRESENTATIONS, "sysAttrs"})


# -- aggregation periods ------------------------------------------------------------------------

# §4.5.19.1: P[n]Y[n]M[n]DT[n]H[n]M[n]S or P[n]W; elements may be omitted; no combined
# date-time alternative form. Fractions only where a timedelta can hold them (not Y, M).
_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"P(?:(\d+)Y)?(?:(\d+)M)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?"
)
_WEEKS = re.compile(rf"P{_NUM}W")
_AVG_MONTH = timedelta(days=365.2425 / 12)
_EPOCH = datetime(1970, 1, 1)
_END_OF_TIME = "9999-12-31T23:59:59.999999Z"


@dataclass(frozen=True)
class AggrPeriod:
    """An aggregation period: whole months (calendar arithmetic) plus a fixed duration."""

    text: str
    months: int
    fixed: timedelta

    def nth(self, origin: datetime, k: int) -> datetime:
        """The start of period k. Always computed from the origin, never by stepping from the
        previous period, so month ends do not drift (Jan 31, Feb 28, Mar 31, ...)."""
        start = origin + relativedelta(months=k * self.months) if self.months else origin
        return start + self.fixed * k

    def index(self, origin: datetime, t: datetime) -> int:
        """The k such that nth(k) <= t < nth(k + 1)."""
        if not self.months:
            return (t - origin) // self.fixed
        # Calendar periods have no fixed length: estimate, then correct (a step or two).
        k = math.floor((t - origin) / (_AVG_MONTH * self.months + self.fixed))
        while self.nth(origin, k) > t:
            k -= 1
        while self.nth(origin, k + 1) <= t:
            k += 1
        return k


def parse_aggr_period(text: str) -> AggrPeriod | None:
    """An ``aggrPeriodDuration``; None for a zero duration, which spans the whole time range."""
    weeks = _WEEKS.fullmatch(text)
    match = weeks or _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise BadRequestData(
            f"aggrPeriodDuration {text!r} is not an ISO 8601 duration of the form "
            "P[n]Y[n]M[n]DT[n]H[n]M[n]S or P[n]W (e.g. PT15M, P1D, P1M)"
        )

    def num(group: str | None) -> float:
        return float(group.replace(",", ".")) if group else 0.0

    try:
        if weeks:
            months, fixed = 0, timedelta(weeks=num(weeks.group(1)))
        else:
            years, mons, days, hours, minutes, seconds = match.groups()
            months = int(years or 0) * 12 + int(mons or 0)
            fixed = timedelta(
                days=num(days), hours=num(hours), minutes=num(minutes), seconds=num(seconds)
            )
        # A period must fit in the calendar (datetime ends at year 9999).
        _EPOCH + relativedelta(months=months) + fixed
    except (OverflowError, ValueError):
        raise BadRequestData(f"aggrPeriodDuration {text!r} is too long") from None
    if not months and not fixed:
        if any(c in "123456789" for c in text):
            # Not a zero duration, but below the microsecond resolution of stored times.
            raise BadRequestData(f"aggrPeriodDuration {text!r} is shorter than a microsecond")
        return None
    return AggrPeriod(text, months, fixed)


# -- the query ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemporalQuery:
    """The temporal part of a request, checked and normalized. Times are in the stored format."""

    timerel: str | None = None
    time_at: str | None = None
    end_time_at: str | None = None
    timeproperty: str = "observedAt"
    last_n: int | None = None
    representation: str = NORMALIZED
    sys_attrs: bool = False
    aggr_methods: tuple[str, ...] = ()
    # None: one period spanning the whole time range (the default, and PT0S / P0D).
    aggr_period: AggrPeriod | None = None

    @property
    def aggregated(self) -> bool:
        return self.representation == AGGREGATED_VALUES

    @property
    def simplified(self) -> bool:
        return self.representation == TEMPORAL_VALUES

    def time_bounds(self) -> tuple[str | None, str | None, bool, bool]:
        """(lower, upper, lower inclusive, upper inclusive) on the time property (§4.11):
        before: t < timeAt; after: t >= timeAt; between: timeAt <= t < endTimeAt."""
        if self.timerel == "before":
            return None, self.time_at, False, False
        if self.timerel == "after":
            return self.time_at, None, True, False
        if self.timerel == "between":
            return self.time_at, self.end_time_at, True, False
        return None, None, False, False

    def in_range(self, t: str) -> bool:
        """Whether a stored-format time satisfies the temporal query."""
        if self.timerel == "before":
            return t < self.time_at  # type: ignore[operator]
        if self.timerel == "after":
            return t >= self.time_at  # type: ignore[operator]
        if self.timerel == "between":
            return self.time_at <= t < self.end_time_at  # type: ignore[operator]
        return True


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def parse_temporal_query(params: Mapping[str, str], *, require_timerel: bool) -> TemporalQuery:
    """The temporal query parameters of a request; BadRequestData for any invalid one.

    ``require_timerel``: Query Temporal Evolution of Entities needs timerel and timeAt
    (§6.18.3.2, cardinality 1); Retrieve Temporal Evolution of an Entity does not (§6.19.3.1).
    """
    timerel = params.get("timerel")
    raw_time_at = params.get("timeAt")
    raw_end = params.get("endTimeAt")
    if timerel is not None and timerel not in TIMERELS:
        raise BadRequestData(f"timerel {timerel!r} is not one of before, after, between")
    if timerel is None and raw_time_at is None:
        if require_timerel:
            raise BadRequestData("timerel and timeAt are mandatory when querying temporal entities")
    elif timerel is None:
        raise BadRequestData("timeAt needs timerel (before, after or between)")
    elif raw_time_at is None:
        raise BadRequestData(f"timerel={timerel} needs timeAt")
    time_at = timefmt.normalize(raw_time_at, "timeAt") if raw_time_at is not None else None
    end_time_at = timefmt.normalize(raw_end, "endTimeAt") if raw_end is not None else None
    if timerel == "between":
        if end_time_at is None:
            raise BadRequestData("timerel=between needs endTimeAt")
        if end_time_at <= time_at:  # type: ignore[operator]
            raise BadRequestData(f"endTimeAt {raw_end!r} must be later than timeAt {raw_time_at!r}")
    else:
        end_time_at = None  # §4.11: endTimeAt is only used by the between relation

    timeproperty = params.get("timeproperty", "observedAt")
    if timeproperty not in TIME_PROPERTIES:
        raise BadRequestData(
            f"timeproperty {timeproperty!r} is not one of {', '.join(TIME_PROPERTIES)}"
        )

    last_n = None
    raw_last_n = params.get("lastN")
    if raw_last_n is not None:
        if not raw_last_n.isascii() or not raw_last_n.isdigit() or int(raw_last_n) < 1:
            raise BadRequestData(f"lastN {raw_last_n!r} is not a positive integer")
        last_n = int(raw_last_n)

    representation, sys_attrs = _representation(params)

    methods: list[str] = []
    raw_methods = params.get("aggrMethods")
    if raw_methods is not None:
        for method in _split(raw_methods):
            if method not in AGGR_METHODS:
                raise BadRequestData(
                    f"aggrMethods: {method!r} is not one of {', '.join(AGGR_METHODS)}"
                )
            if method not in methods:
                methods.append(method)
    period = None
    raw_period = params.get("aggrPeriodDuration")
    if raw_period is not None:
        period = parse_aggr_period(raw_period)
    if representation == AGGREGATED_VALUES and not methods:
        raise BadRequestData("the aggregated temporal representation needs aggrMethods")
    if representation != AGGREGATED_VALUES:
        # §6.18.3.2: aggrMethods and aggrPeriodDuration only apply to aggregatedValues.
        methods, period = [], None

    return TemporalQuery(
        timerel=timerel,
        time_at=time_at,
        end_time_at=end_time_at,
        timeproperty=timeproperty,
        last_n=last_n,
        representation=representation,
        sys_attrs=sys_attrs,
        aggr_methods=tuple(methods),
        aggr_period=period,
    )


# §5.2.21 TemporalQuery: the members a Query body's temporalQ may hold, as query parameters.
_TEMPORAL_Q_MEMBERS = (
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
    "aggrMethods",
    "aggrPeriodDuration",
)


def temporal_params(params: Mapping[str, str], temporal_q: object) -> dict[str, str]:
    """The temporal parameters of Query Temporal Evolution of Entities via POST: the request's
    query parameters (the representation: options, format, ...), with the members of the
    body's ``temporalQ`` (§5.2.21) in place of those of the same name."""
    merged = dict(params)
    if temporal_q is None:
        return merged
    if not isinstance(temporal_q, dict):
        raise BadRequestData("temporalQ must be a TemporalQuery object")
    for name in _TEMPORAL_Q_MEMBERS:
        if name not in temporal_q:
            continue
        value = temporal_q[name]
        if name == "aggrMethods" and isinstance(value, list):
            if not all(isinstance(m, str) for m in value):
                raise BadRequestData("temporalQ.aggrMethods must be an array of strings")
            value = ",".join(value)
        elif name == "lastN" and type(value) is int:
            value = str(value)
        if not isinstance(value, str):
            raise BadRequestData(f"temporalQ.{name} must be a string, got {value!r}")
        merged[name] = value
    return merged


def _representation(params: Mapping[str, str]) -> tuple[str, bool]:
    options = set()
    raw_options = params.get("options")
    if raw_options is not None:
        options = {o for o in _split(raw_options) if o}
        unknown = options - _OPTIONS
        if unknown:
            # §6.3.12: an options value the operation does not define is an invalid request.
            raise InvalidRequest(
                f"unknown options for a temporal request: {', '.join(sorted(unknown))} "
                "(temporalValues, aggregatedValues, sysAttrs)"
            )
    fmt = params.get("format")
    if fmt is not None:
        if fmt not in _REPRESENTATIONS:
            raise InvalidRequest(
                f"unknown format {fmt!r} for a temporal request "
                "(normalized, temporalValues, aggregatedValues)"
            )
        # format, when present, overrides the representation keywords of options (as in
        # representation() for /entities).
        return _REPRESENTATIONS[fmt], "sysAttrs" in options
    chosen = {_REPRESENTATIONS[o] for o in options if o in _REPRESENTATIONS}
    if len(chosen) > 1:
        raise BadRequestData(f"options {', '.join(sorted(chosen))} cannot be combined")
    return next(iter(chosen), NORMALIZED), "sysAttrs" in options


# -- rendering ----------------------------------------------------------------------------------


def render_temporal(
    entity_id: str,
    types: list[str],
    history: dict[str, list[dict]],
    terms: Terms,
    query: TemporalQuery,
    *,
    attrs: Iterable[str] | None = None,
    origin: str | None = None,
    emptied: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The temporal representation of one entity.

    ``history`` maps expanded attribute IRIs to their instances (any order; instances outside
    the query's time range are dropped, and lastN is applied per datasetId, so a store that
    already did either does no harm). ``attrs`` restricts the attributes (expanded IRIs).
    ``origin`` (stored format) fixes where aggregation periods start when the query has no lower
    bound, e.g. to give all entities of a query the same periods; by default that is the time of
    the entity's earliest instance. Attributes left without instances are omitted (§C.5.5), but
    for those in ``emptied`` ({IRI: attribute type}): the attributes a page of a paginated
    response (§6.3.10) holds no instance of, given empty.
    """
    compacted = [terms.compact(t) for t in types]
    out: dict[str, Any] = {
        "id": entity_id,
        "type": compacted[0] if len(compacted) == 1 else compacted,
    }
    wanted = frozenset(attrs) if attrs is not None else None
    # lastN in the aggregated representation keeps the last N periods (_aggregate_series).
    cut = None if query.aggregated else query.last_n
    series: dict[str, list[tuple[str | None, list[str], list[dict]]]] = {}
    for iri, instances in history.items():
        if wanted is not None and iri not in wanted:
            continue
        groups = _series(instances, query, cut)
        if groups:
            series[iri] = groups
    if query.aggregated:
        grid = _Grid(query, series, origin)
        for iri, groups in series.items():
            rendered = [_aggregate_series(ds, ts, insts, query, grid) for ds, ts, insts in groups]
            out[terms.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
    elif query.simplified:
        for iri, groups in series.items():
            rendered = [_simplified_series(ds, ts, insts, terms) for ds, ts, insts in groups]
            out[terms.compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
    else:
        for iri, groups in series.items():
            if len(groups) == 1:
                insts = groups[0][2]
            else:
                # Several datasetIds: one array, in time order; each instance keeps its datasetId.
                merged = [(t, i) for _, ts, ins in groups for t, i in zip(ts, ins, strict=True)]
                merged.sort(key=_first)
                insts = [i for _, i in merged]
            out[terms.compact(iri)] = [_normalized(i, terms, query) for i in insts]
    for iri, kind in (emptied or {}).items():
        if wanted is not None and iri not in wanted:
            continue
        if query.simplified:
            out.setdefault(
                terms.compact(iri), {"type": kind, SIMPLIFIED_MEMBERS.get(kind, "values"): []}
            )
        elif not query.aggregated:
            out.setdefault(terms.compact(iri), [])
    return out


def _first(pair: tuple[str, dict]) -> str:
    return pair[0]


def _series(
    instances: list[dict], query: TemporalQuery, last_n: int | None
) -> list[tuple[str | None, list[str], list[dict]]]:
    """The instances of one attribute in range, by datasetId (the default instance first), each
    series in ascending time order with its times: [(datasetId, times, instances)]."""
    # map(dict.get, ...) keeps these per-instance passes in C: a year of 15-minute readings is
    # 35,040 instances, and every pass over them in Python costs milliseconds.
    times = list(map(dict.get, instances, repeat("_t")))
    if None in times:
        # No _t: fall back on the member of the time property; an instance without either has
        # no place in a time series (§5.7.3.4: it does not match the temporal query).
        prop = query.timeproperty
        pairs = [(i.get("_t") or i.get(prop), i) for i in instances]
        pairs = [(t, i) for t, i in pairs if isinstance(t, str)]
        times = [t for t, _ in pairs]
        instances = [i for _, i in pairs]
    ordered = sorted(times)  # linear when the store already sorted them
    if ordered != times:
        order = sorted(range(len(times)), key=times.__getitem__)
        instances = [instances[k] for k in order]
    times = ordered
    if query.timerel is not None:
        lower, upper, _, _ = query.time_bounds()
        # Lower bounds are inclusive, upper bounds exclusive (§4.11): both are bisect_left.
        lo = bisect_left(times, lower) if lower is not None else 0
        hi = bisect_left(times, upper) if upper is not None else len(times)
        if lo or hi < len(times):
            times, instances = times[lo:hi], instances[lo:hi]
    datasets = list(map(dict.get, instances, repeat("datasetId")))
    by_dataset: dict[str | None, tuple[list[str], list[dict]]] = {}
    if datasets.count(None) == len(datasets):
        if instances:
            by_dataset[None] = (times, instances)
    else:
        for t, inst, ds in zip(times, instances, datasets, strict=True):
            ts, ins = by_dataset.setdefault(ds, ([], []))
            ts.append(t)
            ins.append(inst)
    groups = []
    for ds in sorted(by_dataset, key=lambda d: (d is not None, d or "")):
        ts, ins = by_dataset[ds]
        if last_n is not None and len(ts) > last_n:
            ts, ins = ts[-last_n:], ins[-last_n:]
        groups.append((ds, ts, ins))
    return groups


# -- normalized (§4.5.7, §4.5.8) ----------------------------------------------------------------

_ALWAYS = frozenset({"observedAt", "unitCode", "datasetId"})
_SYSTEM = frozenset({"createdAt", "modifiedAt", "deletedAt"})


def _normalized(inst: dict[str, Any], terms: Terms, query: TemporalQuery) -> dict[str, Any]:
    out = _instance(inst, terms, query.sys_attrs, query.timeproperty)
    prop = query.timeproperty
    if prop not in out and "_t" in inst:
        out[prop] = display(inst["_t"])  # the time the instance was selected on is always shown
    if "instanceId" in inst:
        out["instanceId"] = inst["instanceId"]
    return out


def _instance(
    inst: dict[str, Any], terms: Terms, sys_attrs: bool, shown: str | None
) -> dict[str, Any]:
    kind = inst.get("type", "Property")
    member = KINDS.get(kind, "value")
    out: dict[str, Any] = {"type": kind}
    if member in inst:
        value = inst[member]
        out[member] = terms.compact_vocab_value(value) if kind == "VocabProperty" else value
    for key, val in inst.items():
        if key in ("type", member, "_t", "instanceId"):
            continue
        if key in _ALWAYS:
            out[key] = display(val) if key == "observedAt" else val
        elif key in _SYSTEM:
            # System members only with sysAttrs, but the queried time property and deletedAt
            # (what makes a deletion instance one, §4.5.7) are always shown.
            if sys_attrs or key == shown or key == "deletedAt":
                out[key] = display(val)
        elif key == "objectType":
            out[key] = terms.compact_vocab_value(val)
        elif ":" in key and isinstance(val, dict):
            out[terms.compact(key)] = _instance(val, terms, sys_attrs, None)
        elif key in VALUE_MEMBERS:
            out[key] = val  # e.g. a deletion instance whose null sits in "value"
    return out


# -- simplified (§4.5.9) ------------------------------------------------------------------------


def _simplified_series(
    dataset: str | None, times: list[str], instances: list[dict], terms: Terms
) -> dict[str, Any]:
    kind = instances[-1].get("type", "Property")
    out: dict[str, Any] = {"type": kind}
    if dataset is not None:
        out["datasetId"] = dataset
    values: list[Any] | None = None
    if kind in _BARE_KINDS and len(set(map(dict.get, instances, repeat("type")))) == 1:
        # One kind whose value goes in as it is: no per-instance call.
        values = list(map(dict.get, instances, repeat(KINDS[kind])))
        if None in values:
            values = None
    if values is None:
        values = [_simple_value(inst, terms) for inst in instances]
    shown = display_all(times)
    out[SIMPLIFIED_MEMBERS.get(kind, "values")] = list(map(list, zip(values, shown, strict=True)))
    return out


_BARE_KINDS = frozenset({"Property", "GeoProperty", "Relationship", "ListProperty"})


def _simple_value(inst: dict[str, Any], terms: Terms) -> Any:
    kind = inst.get("type", "Property")
    member = KINDS.get(kind, "value")
    value = inst.get(member, inst.get("value", NULL))
    if kind == "LanguageProperty":
        return {"languageMap": value}
    if kind == "VocabProperty":
        return {"vocab": terms.compact_vocab_value(value)}
    if kind == "JsonProperty":
        return {"json": value}
    if kind == "ListRelationship" and isinstance(value, list):
        # §4.5.9: "an ordered array of Relationship objects (URIs)".
        return [v["object"] if isinstance(v, dict) and "object" in v else v for v in value]
    return value


# -- aggregated (§4.5.19) -----------------------------------------------------------------------


def _parse(t: str) -> datetime:
    # Stored format only ("...Z", UTC): a naive datetime is UTC.
    return datetime.fromisoformat(t[:-1] if t.endswith("Z") else t)


def _format(dt: datetime) -> str:
    return timefmt.from_datetime(dt)


class _Grid:
    """The aggregation periods of one entity: all its attributes share them."""

    def __init__(
        self,
        query: TemporalQuery,
        series: dict[str, list[tuple[str | None, list[str], list[dict]]]],
        origin: str | None,
    ) -> None:
        lower, upper, _, _ = query.time_bounds()
        firsts = [ts[0] for groups in series.values() for _, ts, _ in groups]
        lasts = [ts[-1] for groups in series.values() for _, ts, _ in groups]
        # Periods start at timeAt when the query has a lower bound (§C.5.14: between 12:00 and
        # 13:00 by PT4M gives 12:00-12:04, 12:04-12:08, ...), else at the first instance.
        self.start = lower or origin or (min(firsts) if firsts else None)
        # The last period ends at the query's upper bound when it has one.
        self.upper = upper
        self.end = upper or (max(lasts) if lasts else None)
        self.period = query.aggr_period
        self.origin = _parse(self.start) if self.start and self.period else None

    def _start(self, k: int) -> str:
        try:
            return _format(self.period.nth(self.origin, k))  # type: ignore[union-attr,arg-type]
        except (OverflowError, ValueError):
            return _END_OF_TIME  # a period that would end past year 9999 ends there

    def buckets(self, times: list[str]) -> list[tuple[str, str, int, int]]:
        """(start, end, first index, end index) of each period that holds instances."""
        if self.period is None or self.origin is None:
            return [(self.start or times[0], self.end or times[-1], 0, len(times))]
        period, origin, upper = self.period, self.origin, self.upper
        out = []
        i, n = 0, len(times)
        k, end = None, ""
        while i < n:
            t = times[i]
            following = self._start(k + 2) if k is not None else ""
            if t < following:
                # Regular readings fill consecutive periods: the next period is the one after
                # this, found without parsing the time.
                k, start, end = k + 1, end, following  # type: ignore[operator]
            else:
                k = period.index(origin, _parse(t))
                start, end = self._start(k), self._start(k + 1)
            j = bisect_left(times, end, i + 1)
            out.append((start, end if upper is None or end < upper else upper, i, j))
            i = j
        return out


def _aggregate_series(
    dataset: str | None,
    times: list[str],
    instances: list[dict],
    query: TemporalQuery,
    grid: _Grid,
) -> dict[str, Any]:
    kind = instances[-1].get("type", "Property")
    out: dict[str, Any] = {"type": kind}
    if dataset is not None:
        out["datasetId"] = dataset
    member = KINDS.get(kind, "value")
    values = list(map(dict.get, instances, repeat(member)))
    if None in values:  # a deletion instance may carry its null in "value" whatever its type
        values = [i.get(member, i.get("value", NULL)) for i in instances]
    buckets = grid.buckets(times)
    if query.last_n is not None:
        buckets = buckets[-query.last_n :]  # lastN: the last N periods
    methods = query.aggr_methods
    columns: dict[str, list[list[Any]]] = {m: [] for m in methods}
    for start, end, lo, hi in buckets:
        results = _aggregate(values[lo:hi], kind, methods)
        for method in methods:
            columns[method].append([results[method], display(start), display(end)])
    out.update(columns)
    return out


_NUMBER = (int, float)
_NUMERIC_TYPES = frozenset({int, float})


def _aggregate(values: list[Any], kind: str, methods: tuple[str, ...]) -> dict[str, Any]:
    """The value of each method over the values of one period; None where a method does not
    apply (Tables 4.5.19.1-1 to -3)."""
    out: dict[str, Any] = dict.fromkeys(methods)
    if "totalCount" in out:
        out["totalCount"] = len(values)  # every update in the period, deletions included
    if kind in ("Property", "ListProperty"):
        if _NUMERIC_TYPES.issuperset(map(type, values)):
            # The common case, a numeric time series: no classification needed.
            _numeric(values, values, values, out)
            if "distinctCount" in out:
                out["distinctCount"] = len(set(values))
            return out
        nums: list[Any] = []  # numbers and booleans (true = 1, false = 0)
        sizes: list[int] = []  # array sizes
        texts: list[tuple[str, Any]] = []  # (sort key, value): strings, date/time literals
        clock: list[time] = []  # Time literals, for avg
        for v in values:
            if type(v) is bool:
                nums.append(int(v))
            elif isinstance(v, _NUMBER):
                nums.append(v)
            elif isinstance(v, list):
                sizes.append(len(v))
            elif isinstance(v, str):
                if v != NULL:
                    texts.append((v, v))
            elif isinstance(v, dict):
                _literal(v, texts, clock)
        numeric = nums + sizes if sizes else nums
        _numeric(numeric, nums, numeric, out)
        if not numeric and texts:
            for method, pick in (("min", min), ("max", max)):
                if method in out:
                    out[method] = pick(texts, key=_first)[1]
        if "avg" in out and not numeric and clock:
            out["avg"] = _average_time(clock)
    if "distinctCount" in out:
        out["distinctCount"] = len({_distinct_key(v) for v in values if v != NULL})
    return out


def _numeric(summed: list[Any], squared: list[Any], ordered: list[Any], out: dict) -> None:
    """sum/avg over numbers and array sizes, stddev/sumsq over numbers only (Table
    4.5.19.1-1), min/max over both."""
    if summed:
        total = sum(summed)
        if "sum" in out:
            out["sum"] = total
        if "avg" in out:
            out["avg"] = total / len(summed)
    if ordered:
        if "min" in out:
            out["min"] = min(ordered)
        if "max" in out:
            out["max"] = max(ordered)
    if squared:
        if "sumsq" in out:
            out["sumsq"] = sum(map(mul, squared, squared))
        n = len(squared)
        if "stddev" in out and n > 1:
            # Sample standard deviation (n - 1), as PostgreSQL's stddev used by Stellio and
            # Mintaka. Two passes (deviations from the mean) stay accurate for large values with
            # a small spread, where sum-of-squares minus square-of-sum cancels out.
            deviations = list(map(sub, squared, repeat(sum(squared) / n)))
            out["stddev"] = math.sqrt(sum(map(mul, deviations, deviations)) / (n - 1))


_LITERAL_TYPES = frozenset({"DateTime", "Date", "Time", "dateTime", "date", "time"})


def _literal(value: dict, texts: list[tuple[str, Any]], clock: list[time]) -> None:
    """A JSON-LD typed date/time literal ({"@type": "DateTime", "@value": ...}) takes part in
    min/max (Table 4.5.19.1-2), a Time also in avg; other objects only in the counts."""
    raw = value.get("@value")
    kind = value.get("@type")
    if not isinstance(raw, str) or not isinstance(kind, str):
        return
    kind = re.split(r"[/#:]", kind)[-1]
    if kind not in _LITERAL_TYPES:
        return
    key = raw
    if kind in ("DateTime", "dateTime"):
        try:
            key = timefmt.normalize(raw)  # different offsets compare right in UTC
        except BadRequestData:
            return
    elif kind in ("Time", "time"):
        try:
            parsed = time.fromisoformat(raw)
        except ValueError:
            return
        clock.append(parsed)
    texts.append((key, value))


def _average_time(clock: list[time]) -> dict[str, str]:
    def seconds(t: time) -> float:
        offset = t.utcoffset()
        base = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        return (base - (offset.total_seconds() if offset else 0)) % 86400

    mean = sum(seconds(t) for t in clock) / len(clock)
    micros = round(mean * 1e6) % 86_400_000_000
    avg = (datetime.min + timedelta(microseconds=micros)).time()
    zone = "Z" if any(t.utcoffset() is not None for t in clock) else ""
    return {"@type": "Time", "@value": avg.isoformat() + zone}


def _distinct_key(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value
    if kind is bool:
        return ("bool", value)  # JSON true and 1 are different values; Python's True == 1
    return ("json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


# -- aggregated in the store (numeric series) ---------------------------------------------------

MAX_SQL_PERIODS = 5000  # more periods than this: aggregate in Python from the instances

# Per period, as the store computes it: (period index, instances, numeric instances, sum, min,
# max, sum of squares, distinct values, sum of squared deviations from the mean).
PeriodStats = tuple[int, int, int, Any, Any, Any, Any, int, Any]


def sql_periods(query: TemporalQuery) -> list[str] | None:
    """The boundaries [b0, b1, ..., bn] of the aggregation periods of a query that can be
    aggregated in the store: one with both bounds (timerel=between) and a period. Period k is
    [b_k, b_k+1), the last one ending at endTimeAt, exactly as ``_Grid`` cuts them. None when
    the query is not of that kind or has too many periods."""
    lower, upper, _, _ = query.time_bounds()
    period = query.aggr_period
    if lower is None or upper is None or period is None:
        return None
    origin = _parse(lower)
    bounds = [lower]
    k = 1
    while True:
        try:
            nxt = _format(period.nth(origin, k))
        except (OverflowError, ValueError):
            nxt = _END_OF_TIME
        if nxt >= upper:
            bounds.append(upper)
            return bounds
        bounds.append(nxt)
        k += 1
        if k > MAX_SQL_PERIODS:
            return None


def render_stats_series(
    dataset: str | None,
    stats: list[PeriodStats],
    bounds: list[str],
    query: TemporalQuery,
) -> dict[str, Any] | None:
    """The aggregatedValues of one numeric series from the store's per-period statistics: what
    ``_aggregate_series`` gives from the instances (None when a period holds anything but
    numbers: then the instances must be aggregated in Python)."""
    out: dict[str, Any] = {"type": "Property"}
    if dataset is not None:
        out["datasetId"] = dataset
    rows = sorted(stats, key=_first_int)
    if any(n != numeric for _, n, numeric, *_ in rows):
        return None
    if query.last_n is not None:
        rows = rows[-query.last_n :]
    methods = query.aggr_methods
    columns: dict[str, list[list[Any]]] = {m: [] for m in methods}
    for k, n, _, total, low, high, squares, distinct, deviations in rows:
        for method in methods:
            if method == "totalCount":
                value = n
            elif method == "distinctCount":
                value = distinct
            elif method == "sum":
                value = total
            elif method == "avg":
                value = total / n
            elif method == "min":
                value = low
            elif method == "max":
                value = high
            elif method == "sumsq":
                value = squares
            else:  # stddev, sample (n - 1) as in _numeric
                value = math.sqrt(deviations / (n - 1)) if n > 1 else None
            columns[method].append([value, display(bounds[k]), display(bounds[k + 1])])
    out.update(columns)
    return out


def _first_int(row: PeriodStats) -> int:
    return row[0]


__all__ = [
    "AGGREGATED_VALUES",
    "AGGR_METHODS",
    "MAX_SQL_PERIODS",
    "NORMALIZED",
    "SIMPLIFIED_MEMBERS",
    "TEMPORAL_VALUES",
    "TIMERELS",
    "TIME_PROPERTIES",
    "AggrPeriod",
    "PeriodStats",
    "TemporalQuery",
    "parse_aggr_period",
    "parse_temporal_query",
    "render_stats_series",
    "render_temporal",
    "sql_periods",
    "temporal_params",
]
