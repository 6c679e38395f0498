"""Statistics of a tenant's occurrences, for the operations room's console and open data.

Open and closed counts by category, department, status and area; for each deadline (response,
resolution), how many met it, the mean and p90 time it took from the report, and the share met
in time. The store computes every figure in SQL (``Store.occurrence_statistics``) from the
columns each write keeps (``store.occurrences.occurrence_columns``), never by reading the
documents; this module checks the filters against the tenant's configuration, names what the
codes stand for and shapes the answer.

Times are seconds. The time to respond is from the report until the first action of the
operations room or a department (the response deadline met); the time to resolve, until the
occurrence was resolved, rejected or merged as a duplicate (the resolution deadline met; a
reopened occurrence counts from its report again, once resolved again). The share within the
deadline is of the deadlines decided: met, or passed unmet (``overdue``), so that an
occurrence long overdue lowers it before it is resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cidade.ngsild import timefmt
from cidade.ngsild.errors import NgsiError
from cidade.occurrences.errors import InvalidFilter
from cidade.occurrences.model import STATUSES
from cidade.occurrences.service import OccurrenceService
from cidade.store.occurrences import (
    STATISTICS_DIMENSIONS,
    DurationFigures,
    OccurrenceStatisticsQuery,
)


def _instant(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        return timefmt.to_epoch(timefmt.normalize(value, what))
    except NgsiError:
        raise InvalidFilter(
            f"{what} is an ISO 8601 date or date-time (2026-01-31, 2026-01-31T12:00:00Z)",
            field=what,
        ) from None


def _known(values: Sequence[str] | None, known: Any, what: str) -> list[str] | None:
    if values is None:
        return None
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidFilter(f"no {what} {', '.join(map(repr, unknown))}", field=what)
    return list(dict.fromkeys(values))


async def occurrence_statistics(
    service: OccurrenceService,
    tenant: str,
    *,
    categories: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    departments: Sequence[str] | None = None,
    areas: Sequence[str] | None = None,
    created_since: str | None = None,
    created_until: str | None = None,
) -> dict[str, Any]:
    """The statistics of the occurrences created in [created_since, created_until) of the
    categories, groups, departments and areas given (each None: any). InvalidFilter (400)
    names a filter that is not a date or not in the tenant's configuration."""
    config = await service.config(tenant)
    since = _instant(created_since, "created_since")
    until = _instant(created_until, "created_until")
    if since is not None and until is not None and since >= until:
        raise InvalidFilter("created_since must be before created_until", field="created_until")
    query = OccurrenceStatisticsQuery(
        categories=_known(categories, config.categories, "category"),
        groups=_known(groups, {c.group for c in config.categories.values()}, "group"),
        departments=_known(departments, config.departments, "department"),
        areas=_known(areas, config.areas, "area"),
        created_since=since,
        created_until=until,
    )
    now = service.clock()
    figures = await service.store.occurrence_statistics(tenant, query, now)

    def name(dimension: str, code: str) -> str:
        if dimension == "status":
            status = STATUSES.get(code)
            return status.label if status else code
        named: Any = {
            "category": config.categories,
            "department": config.departments,
            "area": config.areas,
        }[dimension]
        found = named.get(code)
        return found.name if found else code  # no longer configured: counted under its code

    order = {code: i for i, code in enumerate(STATUSES)}
    by: dict[str, list[dict[str, Any]]] = {d: [] for d in STATISTICS_DIMENSIONS}
    for dimension, code, open_, closed in sorted(
        figures.counts, key=lambda c: (c[0], order.get(c[1], len(order)), c[1])
    ):
        by[dimension].append(
            {
                # outside every configured area: no area
                "code": code if code or dimension != "area" else None,
                "name": name(dimension, code) if code else None,
                "open": open_,
                "closed": closed,
            }
        )
    return {
        "tenant": tenant,
        "computed_at": timefmt.display(timefmt.from_epoch(now)),
        "filters": {
            "created_since": _shown(since),
            "created_until": _shown(until),
            "category": query.categories,
            "group": query.groups,
            "department": query.departments,
            "area": query.areas,
        },
        "open": figures.open,
        "closed": figures.closed,
        "total": figures.open + figures.closed,
        **{f"by_{d}": by[d] for d in STATISTICS_DIMENSIONS},
        "response": _deadline(figures.response),
        "resolution": _deadline(figures.resolution),
    }


def _shown(instant: float | None) -> str | None:
    return None if instant is None else timefmt.display(timefmt.from_epoch(instant))


def _deadline(f: DurationFigures) -> dict[str, Any]:
    decided = f.count + f.overdue
    return {
        "met": f.count,
        "mean_seconds": None if f.mean is None else round(f.mean, 3),
        "p90_seconds": None if f.p90 is None else round(f.p90, 3),
        "within_deadline": f.within,
        "late": f.late,
        "overdue": f.overdue,
        "share_within_deadline": round(f.within / decided, 4) if decided else None,
    }
