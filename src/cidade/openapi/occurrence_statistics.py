"""GET /occurrences/statistics (occurrences/statistics_api.py, docs/occurrences.md)."""

from __future__ import annotations

from cidade.openapi.build import TENANT, ApiPart, json_ok, merge, operation, query
from cidade.openapi.occurrences import TAG
from cidade.openapi.schemas import Schema, ref

# one or more codes a value, comma-separated
CODES: Schema = {
    "type": "array",
    "items": {"type": "string", "pattern": r"^[a-z0-9_-]{1,64}(,[a-z0-9_-]{1,64})*$"},
}
INSTANT: Schema = {"type": "string", "examples": ["2026-01-01", "2026-01-31T12:00:00Z"]}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
NULLABLE_NUMBER: Schema = {"type": ["number", "null"]}
COUNT: Schema = {"type": "integer", "minimum": 0}

COUNTED: Schema = {
    "type": "object",
    "description": "Open and closed occurrences of one category, department, status or area.",
    "required": ["code", "name", "open", "closed"],
    "properties": {
        "code": {
            "type": ["string", "null"],
            "description": "null in by_area: outside every configured area.",
        },
        "name": NULLABLE_STRING,
        "open": COUNT,
        "closed": COUNT,
    },
}

DEADLINE: Schema = {
    "type": "object",
    "description": "One deadline over the occurrences counted. `met`: how many met it (the "
    "response: the first action on it; the resolution: resolved, rejected or merged); "
    "`mean_seconds` and `p90_seconds`: the time from the report to meeting it (p90 linear "
    "between the nearest ranks; null when none met it); `within_deadline` and `late`: met by "
    "its due time or after; `overdue`: not met, due time passed; `share_within_deadline`: "
    "within_deadline / (met + overdue), null when both are 0.",
    "required": [
        "met",
        "mean_seconds",
        "p90_seconds",
        "within_deadline",
        "late",
        "overdue",
        "share_within_deadline",
    ],
    "properties": {
        "met": COUNT,
        "mean_seconds": NULLABLE_NUMBER,
        "p90_seconds": NULLABLE_NUMBER,
        "within_deadline": COUNT,
        "late": COUNT,
        "overdue": COUNT,
        "share_within_deadline": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    },
}

NULLABLE_LIST: Schema = {"type": ["array", "null"], "items": {"type": "string"}}

STATISTICS: Schema = {
    "type": "object",
    "required": [
        "tenant",
        "computed_at",
        "filters",
        "open",
        "closed",
        "total",
        "by_category",
        "by_department",
        "by_status",
        "by_area",
        "response",
        "resolution",
    ],
    "properties": {
        "tenant": {"type": "string"},
        "computed_at": {"type": "string", "format": "date-time"},
        "filters": {
            "type": "object",
            "description": "The filters applied, as understood (null: not filtered).",
            "properties": {
                "created_since": NULLABLE_STRING,
                "created_until": NULLABLE_STRING,
                "category": NULLABLE_LIST,
                "group": NULLABLE_LIST,
                "department": NULLABLE_LIST,
                "area": NULLABLE_LIST,
            },
        },
        "open": COUNT,
        "closed": COUNT,
        "total": COUNT,
        "by_category": {"type": "array", "items": ref("OccurrenceCount")},
        "by_department": {
            "type": "array",
            "items": ref("OccurrenceCount"),
            "description": "An occurrence with tasks of two departments counts in both.",
        },
        "by_status": {"type": "array", "items": ref("OccurrenceCount")},
        "by_area": {"type": "array", "items": ref("OccurrenceCount")},
        "response": ref("OccurrenceDeadlineFigures"),
        "resolution": ref("OccurrenceDeadlineFigures"),
    },
}


def _codes(name: str, what: str) -> dict:
    return query(name, f"{what}, comma-separated or the parameter repeated.", CODES, explode=True)


def statistics_paths() -> dict[str, dict]:
    return {
        "/occurrences/statistics": {
            "get": operation(
                "occurrenceStatistics",
                "Statistics of the occurrences: counts, times to respond and resolve",
                merge(
                    json_ok(ref("OccurrenceStatistics"), "The statistics."),
                    {
                        "400": {
                            "description": "A filter is unknown, malformed or not in the "
                            "tenant's configuration (InvalidFilter); `field` names it.",
                            "content": {"application/json": {"schema": ref("Problem")}},
                        }
                    },
                ),
                tag=TAG,
                description="Open and closed counts by category, department, status and area; "
                "mean and p90 time to respond and to resolve; the share within the deadline. "
                "Computed from the tenant's occurrences when asked. A filter that is unknown, "
                "malformed or not in the tenant's configuration is 400 InvalidFilter naming it "
                "in `field`.",
                parameters=[
                    TENANT,
                    query("created_since", "Created at or after (ISO 8601 date or time).", INSTANT),
                    query("created_until", "Created before (ISO 8601 date or time).", INSTANT),
                    _codes("category", "Category codes"),
                    query(
                        "group",
                        "A category group's name; repeat the parameter for more.",
                        {"type": "array", "items": {"type": "string", "minLength": 1}},
                        explode=True,
                    ),
                    _codes("department", "Department codes"),
                    _codes("area", "Area codes"),
                ],
            )
        }
    }


def occurrence_statistics_part() -> ApiPart:
    return ApiPart(
        paths=statistics_paths(),
        schemas={
            "OccurrenceStatistics": STATISTICS,
            "OccurrenceCount": COUNTED,
            "OccurrenceDeadlineFigures": DEADLINE,
        },
    )
