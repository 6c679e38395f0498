"""What the stores keep of occurrences (docs/occurrences.md): the carriers the occurrences
service and both stores share, and the columns a stored occurrence is looked up by.

An occurrence is kept as two JSON documents beside its columns: ``doc``, everything that is not
personal data (what the operations room, the hub's entity and Open311 show, each its part),
and ``private``, the reporter's contact and the followers' (read only by the service, for
telling them; never by a public API). Its ``events`` are its append-only history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cidade.ngsild import timefmt

# Metres per degree of latitude (and of longitude at the equator) on the mean Earth sphere.
METRES_PER_DEGREE = 111_195.0
EARTH_RADIUS_M = 6_371_008.8


@dataclass(slots=True)
class StoredOccurrence:
    number: int
    version: int
    doc: dict[str, Any]
    private: dict[str, Any]


@dataclass(slots=True)
class OccurrenceChange:
    """What an occurrence's write function returns: its new documents, the events its history
    gains (each a dict: at, actor, kind, ...; the store numbers them) and the messages to send
    because of it (each a dict: channel, to, subject, text, ...), all in one transaction."""

    doc: dict[str, Any]
    private: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # (photo id, media type, bytes) to keep with it
    photos: list[tuple[str, str, bytes]] = field(default_factory=list)


MESSAGE_STATES = ("pending", "sent", "failed")


@dataclass(slots=True)
class OccurrenceMessage:
    """One message of the log (occurrence_messages): ``doc`` as the service wrote it with the
    change (occurrences/telling.py: channel, to, subject, text, recipient, kind, ...).
    ``attempts`` counts the claims made of it: a claim is settled only while it is unchanged,
    so a sender whose lease ran out cannot settle what another sender took since."""

    seq: int
    tenant: str
    number: int
    state: str  # pending | sent | failed
    attempts: int
    next_at: float  # pending: when it is due (or its lease ends, while claimed)
    created_at: float
    doc: dict[str, Any]
    result: str | None


# (the occurrence as it is, None when it is being created; its number) -> the change. Runs
# inside the store's transaction; raising refuses the write, which then changes nothing.
OccurrenceApply = Callable[[StoredOccurrence | None, int], OccurrenceChange]


class OccurrenceConflict(Exception):
    """A write that would open a second occurrence for a sensor rule's entity (its rule key)."""


@dataclass(slots=True)
class OccurrenceQuery:
    """Which occurrences of a tenant to list. Every field narrows; None does not."""

    numbers: Sequence[int] | None = None
    statuses: Sequence[str] | None = None
    open: bool | None = None
    categories: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    departments: Sequence[str] | None = None
    priorities: Sequence[str] | None = None
    sources: Sequence[str] | None = None
    areas: Sequence[str] | None = None
    created_since: float | None = None  # epoch seconds, inclusive
    created_until: float | None = None  # exclusive
    updated_since: float | None = None
    updated_until: float | None = None
    # (latitude, longitude, metres): within that distance, decided exactly (great circle)
    near: tuple[float, float, float] | None = None
    # (min_lon, min_lat, max_lon, max_lat)
    bbox: tuple[float, float, float, float] | None = None
    rule_key: str | None = None
    # open occurrences whose response or resolution deadline passed before this epoch time
    # without being met or marked as breached
    overdue_at: float | None = None
    order: str = "-created"  # created | -created | updated | -updated | number | -number
    limit: int = 100
    offset: int = 0
    count: bool = False


ORDERS = {
    "created": "created_at ASC, number ASC",
    "-created": "created_at DESC, number DESC",
    "updated": "updated_at ASC, number ASC",
    "-updated": "updated_at DESC, number DESC",
    "number": "number ASC",
    "-number": "number DESC",
}


@dataclass(slots=True)
class OccurrencePage:
    items: list[StoredOccurrence]
    total: int | None


def epoch(stored: str | None) -> float | None:
    """Epoch seconds of a stored timestamp (timefmt's form), None for None."""
    return None if stored is None else timefmt.to_epoch(stored)


def occurrence_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The columns an occurrence is found by, read from its document."""
    location = doc.get("location") or {}
    rule = doc.get("rule")
    return {
        "category": doc["category"],
        "grp": doc.get("group") or "",
        "status": doc["status"],
        "open": bool(doc.get("open")),
        "priority": doc.get("priority") or "",
        "source": doc.get("source") or "",
        "area": doc.get("area") or "",
        "lat": location.get("lat"),
        "lon": location.get("lon"),
        "created_at": epoch(doc["created_at"]),
        "updated_at": epoch(doc["updated_at"]),
        "response_due": _due(doc, "response"),
        "resolution_due": _due(doc, "resolution"),
        "token": doc.get("token"),
        "rule_key": f"{rule['id']} {rule['entity']}" if rule else None,
        # What the statistics are computed from in SQL (store methods occurrence_statistics).
        "responded_at": _deadline_time(doc, "response", "met"),
        "resolved_at": _deadline_time(doc, "resolution", "met"),
        "response_deadline": _deadline_time(doc, "response", "due"),
        "resolution_deadline": _deadline_time(doc, "resolution", "due"),
        "departments": sorted(set(doc.get("departments") or ())),
    }


def _deadline_time(doc: dict[str, Any], which: str, when: str) -> float | None:
    """Epoch seconds of a deadline's ``due`` or ``met``, whatever the occurrence's state."""
    return epoch(((doc.get("deadlines") or {}).get(which) or {}).get(when))


def _due(doc: dict[str, Any], which: str) -> float | None:
    """A deadline still to watch: set, not met, not yet marked as breached, occurrence open."""
    deadline = (doc.get("deadlines") or {}).get(which) or {}
    if not doc.get("open") or not deadline.get("due") or deadline.get("met"):
        return None
    if deadline.get("breached"):
        return None
    return epoch(deadline["due"])


@dataclass(slots=True)
class OccurrenceStatisticsQuery:
    """Which of a tenant's occurrences the statistics count. Every field narrows; None does not."""

    categories: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    departments: Sequence[str] | None = None
    areas: Sequence[str] | None = None
    created_since: float | None = None  # epoch seconds, inclusive
    created_until: float | None = None  # exclusive


@dataclass(slots=True)
class DurationFigures:
    """One deadline (response or resolution) over the occurrences counted: ``count`` met it
    (answered, resolved), taking ``mean`` and ``p90`` seconds from their creation (p90 as
    PostgreSQL's percentile_cont: linear between the two nearest ranks; None when none met
    it); ``within`` met it by its due time, ``late`` after it; ``overdue`` have not met it
    and its due time has passed."""

    count: int = 0
    mean: float | None = None
    p90: float | None = None
    within: int = 0
    late: int = 0
    overdue: int = 0


@dataclass(slots=True)
class OccurrenceAggregates:
    """What a store counts for the statistics (occurrences/statistics.py shapes it).
    ``counts``: (dimension, key, open, closed) for the dimensions category, department,
    status and area (an occurrence held by two departments counts in both; area "" is
    outside every configured area); ``open``/``closed``: the occurrences counted."""

    open: int
    closed: int
    counts: list[tuple[str, str, int, int]]
    response: DurationFigures
    resolution: DurationFigures


STATISTICS_DIMENSIONS = ("category", "department", "status", "area")
P90 = 0.9


def percentile_between(nearest: Sequence[float], fraction: float) -> float:
    """A percentile from the values at the two ranks around it (the second absent when the
    first is the last) and how far between them it lies, as PostgreSQL's percentile_cont
    computes it: what SQLite's statistics do with the two values an ordered OFFSET gives."""
    if fraction == 0 or len(nearest) == 1:
        return nearest[0]
    return nearest[0] + (nearest[1] - nearest[0]) * fraction


def rule_key(rule_id: str, entity_id: str) -> str:
    return f"{rule_id} {entity_id}"


def near_box(lat: float, lon: float, metres: float) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) holding every point within ``metres`` (enlarged a
    little: a box only selects candidates, the distance decides)."""
    dlat = metres / METRES_PER_DEGREE * 1.01
    cos = max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
    dlon = metres / (METRES_PER_DEGREE * cos) * 1.01
    return lon - dlon, lat - dlat, lon + dlon, lat + dlat


def query_box(query: OccurrenceQuery) -> tuple[float, float, float, float] | None:
    """The box a query's points must fall in: its ``near`` point's, its ``bbox``, the
    intersection of both, or None."""
    if query.near is None:
        return query.bbox
    box = near_box(*query.near)
    if query.bbox is None:
        return box
    return (
        max(box[0], query.bbox[0]),
        max(box[1], query.bbox[1]),
        min(box[2], query.bbox[2]),
        min(box[3], query.bbox[3]),
    )


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine on the mean sphere; PostGIS's geography
    distance differs by under 0.5 %, well inside any radius a category sets)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def check_query(query: OccurrenceQuery) -> OccurrenceQuery:
    if query.order not in ORDERS:
        raise ValueError(f"unknown order {query.order!r}")
    if not (0 <= query.limit <= 100_000) or query.offset < 0:
        raise ValueError("limit and offset out of range")
    return query


def check_settlement(state: str, next_at: float | None) -> None:
    """A message is settled as sent or failed, or put back as pending with when it is due."""
    if state not in MESSAGE_STATES:
        raise ValueError(f"a message's state is one of {', '.join(MESSAGE_STATES)}")
    if (state == "pending") != (next_at is not None):
        raise ValueError("a message put back as pending needs next_at, and only it")


# -- sensor rules (occurrences/rules.py) --------------------------------------------------------


@dataclass(slots=True)
class RuleWatch:
    """What a sensor rule's engine remembers of one entity while something is going on with it
    (kept in the store, so that another worker or a restart goes on from there).

    ``state``: "holding" (the condition holds since ``since``, not yet long enough to raise an
    occurrence) or "raised" (occurrence ``number`` was raised for this episode; ``clear_since``:
    since when the clear condition holds, None while it does not). Times are the entity's own
    (its observations' observedAt), in epoch seconds."""

    rule: str
    entity: str
    state: str
    since: float
    clear_since: float | None = None
    number: int | None = None


WATCH_STATES = ("holding", "raised")
