"""Pagination of temporal attribute instances (ETSI GS CIM 009 v1.8 §6.3.10).

A temporal response carries at most ``max_instances`` instances of an attribute (per datasetId,
the unit lastN counts in). When the requested time range holds more, the response is one page of
it: ``206 Partial Content`` with ``Content-Range: date-time <range-start>-<range-end>/<size>``.

* Without lastN the pages go forwards, from the least recent instance to the most recent; with
  lastN (greater than the maximum: otherwise lastN itself is the limit and nothing is cut) they
  go backwards, from the most recent.
* A page is a time range, the same for every attribute (and every entity of a query): within it
  no instance is left out, so the next page starts exactly where this one ends. The range is cut
  at the last instant before which every attribute is complete; an attribute with no instance in
  it is given as empty (an empty array, or an empty ``values`` list).
* range-start is timeAt (after, between) or the least recent instance's time going forwards,
  timeAt (before), endTimeAt (between) or the most recent instance's time going backwards;
  range-end is the time of the last instance of the page (most recent going forwards, least
  recent going backwards); size is ``*`` going forwards, lastN going backwards (as Stellio and
  the ETSI test suite, 020_13 and 021_15, read the clause).
* Aggregated representations are computed over the whole range and never cut.

The next page: forwards, the same request with timerel=after (or between, keeping endTimeAt) and
timeAt just after range-end (range-end plus one microsecond, the resolution of stored times;
``after`` includes timeAt); backwards, timerel=before (or between, keeping timeAt) with timeAt
(endTimeAt) = range-end, which the upper bound excludes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cidade.hub.temporal import TemporalQuery
from cidade.ngsild.timefmt import display

History = dict[str, dict[str, list[dict[str, Any]]]]  # {entity id: {attribute IRI: instances}}


@dataclass(frozen=True)
class Limits:
    """How many instances per attribute to ask the store for, and in which direction."""

    first_n: int | None  # forwards: the first N
    last_n: int | None  # backwards (or plain lastN): the last N
    paged: bool  # whether a cut (206) is possible

    @property
    def backwards(self) -> bool:
        return self.paged and self.last_n is not None


def limits(query: TemporalQuery, max_instances: int) -> Limits:
    """One instance more than a page holds is fetched, to tell a full page from a cut one."""
    if query.aggregated:
        return Limits(None, None, False)
    if query.last_n is not None and query.last_n <= max_instances:
        return Limits(None, query.last_n, False)
    if query.last_n is not None:
        return Limits(None, max_instances + 1, True)
    return Limits(max_instances + 1, None, True)


@dataclass(frozen=True)
class Page:
    start: str
    end: str
    size: str

    def content_range(self) -> str:
        return f"date-time {display(self.start)}-{display(self.end)}/{self.size}"


@dataclass(frozen=True)
class Cut:
    """Where the page ends, and the series whose instances at that very time were not all
    fetched (more than a page of instances with one timestamp): (entity, attribute)."""

    end: str
    incomplete: list[tuple[str, str]]


def find_cut(history: History, limits: Limits, max_instances: int) -> Cut | None:
    """None when no attribute has more instances than a page holds."""
    if not limits.paged:
        return None
    backwards = limits.backwards
    ends: list[tuple[str, str, str, bool]] = []  # (candidate end, entity, attr, incomplete)
    for eid, attrs in history.items():
        for attr, instances in attrs.items():
            for times in _series_times(instances):
                if len(times) <= max_instances:
                    continue
                # The store gave max + 1 instances: the one furthest from the start is only a
                # marker that more exist; the page may hold what lies strictly before it.
                marker = times[0] if backwards else times[-1]
                complete = [t for t in times if (t > marker if backwards else t < marker)]
                if complete:
                    ends.append((min(complete) if backwards else max(complete), eid, attr, False))
                else:  # every fetched instance has the marker's time: take them all (below)
                    ends.append((marker, eid, attr, True))
    if not ends:
        return None
    end = max(e[0] for e in ends) if backwards else min(e[0] for e in ends)
    return Cut(end, [(eid, attr) for t, eid, attr, partial in ends if partial and t == end])


def apply_cut(
    history: History, cut: Cut, query: TemporalQuery, limits: Limits
) -> tuple[Page, dict[str, dict[str, str]]]:
    """Keep only the instances inside the page; the page, and per entity the attributes left
    without instances by the cut ({entity id: {attribute IRI: attribute type}})."""
    backwards = limits.backwards
    emptied: dict[str, dict[str, str]] = {}
    lowest: str | None = None
    highest: str | None = None
    for eid, attrs in history.items():
        for attr, instances in list(attrs.items()):
            kept = [
                i for i in instances if (i["_t"] >= cut.end if backwards else i["_t"] <= cut.end)
            ]
            if not kept:
                if instances:
                    emptied.setdefault(eid, {})[attr] = instances[0].get("type", "Property")
                del attrs[attr]
                continue
            attrs[attr] = kept
            first, last = min(i["_t"] for i in kept), max(i["_t"] for i in kept)
            lowest = first if lowest is None or first < lowest else lowest
            highest = last if highest is None or last > highest else highest
    if backwards:
        if query.timerel == "before":
            start = query.time_at
        elif query.timerel == "between":
            start = query.end_time_at
        else:
            start = highest
        size = str(query.last_n)
    else:
        start = query.time_at if query.timerel in ("after", "between") else lowest
        size = "*"
    return Page(start or cut.end, cut.end, size), emptied


def _series_times(instances: list[dict[str, Any]]) -> list[list[str]]:
    """The sorted times of each datasetId's series of one attribute."""
    by_dataset: dict[Any, list[str]] = {}
    for inst in instances:
        by_dataset.setdefault(inst.get("datasetId"), []).append(inst["_t"])
    return [sorted(times) for times in by_dataset.values()]


__all__ = ["Cut", "Limits", "Page", "apply_cut", "find_cut", "limits"]
