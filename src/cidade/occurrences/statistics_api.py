"""GET /occurrences/statistics: the occurrences' statistics (occurrences/statistics.py) as JSON,
for the operations room's console and open data.

Filters, each optional: ``created_since`` and ``created_until`` (ISO 8601 dates or date-times,
the creation time in [since, until)); ``category``, ``department`` and ``area`` (codes, the
parameter repeated or comma-separated); ``group`` (a category group's name, repeated for more).
A filter that is not one of these, not well formed or not in the tenant's configuration is 400
(InvalidFilter, naming it): a misspelt filter must not answer figures for everything.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.gate import grant_of
from cidade.auth.routes import GuardedRoute, guarded
from cidade.http.bodies import JSON
from cidade.occurrences.errors import InvalidFilter
from cidade.occurrences.service import OccurrenceService
from cidade.occurrences.statistics import occurrence_statistics

PATH = "/occurrences/statistics"
# query parameter -> the keyword of occurrence_statistics; codes may be comma-separated
_LISTS = {"category": "categories", "department": "departments", "area": "areas"}
_WHOLE = {"group": "groups"}  # names, which may hold commas
_INSTANTS = ("created_since", "created_until")
FILTERS = (*_INSTANTS, *_LISTS, *_WHOLE)


def statistics_filters(request: Request) -> dict[str, Any]:
    """The keywords of occurrence_statistics from the request's query; InvalidFilter."""
    params = request.query_params
    unknown = sorted(set(params) - set(FILTERS))
    if unknown:
        raise InvalidFilter(
            f"unknown filter {', '.join(unknown)} (filters: {', '.join(FILTERS)})",
            field=unknown[0],
        )
    out: dict[str, Any] = {}
    for name in _INSTANTS:
        values = params.getlist(name)
        if len(values) > 1:
            raise InvalidFilter(f"{name} is given once", field=name)
        if values:
            out[name] = values[0]
    for name, keyword in (*_LISTS.items(), *_WHOLE.items()):
        values = params.getlist(name)
        if not values:
            continue
        if name in _LISTS:
            values = [v for value in values for v in value.split(",")]
        if not all(v.strip() for v in values):
            raise InvalidFilter(f"{name}: an empty value", field=name)
        out[keyword] = [v.strip() for v in values]
    return out


class StatisticsApi:
    def __init__(self, service: OccurrenceService) -> None:
        self.service = service

    async def statistics(self, request: Request) -> Response:
        filters = statistics_filters(request)
        figures = await occurrence_statistics(self.service, grant_of(request).tenant, **filters)
        return Response(orjson.dumps(figures), media_type=JSON)

    def routes(self) -> list[GuardedRoute]:
        return [guarded(PATH, {"GET": (self.statistics, "occurrences.read")})]
