"""The occurrences API (occurrences/api.py, docs/occurrences.md): /occurrences and its
configuration. Errors are ProblemDetails whose types are under
https://cidade.city/errors/occurrences/ (or the gate's)."""

from __future__ import annotations

from typing import Any

from cidade.occurrences.model import PRIORITIES, SOURCES, STATUSES
from cidade.occurrences.workflow import ACTIONS
from cidade.openapi.build import (
    TENANT,
    ApiPart,
    json_body,
    json_ok,
    merge,
    no_content,
    operation,
    path_param,
    query,
)
from cidade.openapi.schemas import Schema, ref

TAG = "Occurrences"
TEXT: Schema = {"type": "string", "maxLength": 4000}
SHORT: Schema = {"type": "string", "maxLength": 200}
CODE: Schema = {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}
NUMBER = path_param("number", "the occurrence's number", "1", {"type": "integer", "minimum": 1})
OCCURRENCE: Schema = {
    "type": "object",
    "description": "An occurrence as the operations room sees it (no reporter's contact).",
    "required": ["number", "category", "status", "open", "priority", "created_at"],
    "properties": {
        "number": {"type": "integer"},
        "category": {"type": "string"},
        "group": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "open": {"type": "boolean"},
        "priority": {"enum": list(PRIORITIES)},
        "source": {"enum": list(SOURCES)},
        "departments": {"type": "array", "items": {"type": "string"}},
        "actions": {"type": "array", "items": {"enum": list(ACTIONS)}},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
PUBLIC_OCCURRENCE: Schema = {
    "type": "object",
    "description": "An occurrence as anyone sees it: no contact, no internal work.",
    "required": ["number", "category", "status", "open"],
    "properties": {
        "number": {"type": "integer"},
        "category": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "open": {"type": "boolean"},
        "description": {"type": "string"},
        "photo_urls": {"type": "array", "items": {"type": "string"}},
    },
}
REPORT: Schema = {
    "type": "object",
    "description": "A new occurrence. A location is lat and long, or an address (or both). "
    "name, email, phone and webhook are private: never shown by any public API. source other "
    "than web or open311, priority, entities and agency_ref are for the operations room.",
    "required": ["category"],
    "additionalProperties": False,
    "properties": {
        "category": {"type": "string"},
        "description": TEXT,
        "title": SHORT,
        "lat": {"type": ["number", "string", "null"]},
        "long": {"type": ["number", "string", "null"]},
        "address": {"type": "string", "maxLength": 500},
        "source": {"enum": list(SOURCES)},
        "priority": {"enum": list(PRIORITIES)},
        "attributes": {"type": "object", "description": "Answers to the category's questions."},
        "media_url": {"type": "string", "maxLength": 2000},
        "entities": {"type": "array", "items": {"type": "string"}},
        "name": SHORT,
        "email": {"type": "string", "maxLength": 254},
        "phone": {"type": "string", "maxLength": 32},
        "webhook": {"type": "string", "maxLength": 2000},
        "notify": {"enum": ["", "email", "sms", "webhook", "none"]},
        "agency_ref": SHORT,
    },
}
REPORT_FORM: Schema = {
    "type": "object",
    "description": "The same report as a form, with up to five `photo` files (JPEG, PNG, WebP "
    "or GIF; re-encoded without their metadata) and answers as `attribute[code]` fields.",
    "required": ["category"],
    "properties": {
        "category": {"type": "string"},
        "description": TEXT,
        "lat": {"type": "string"},
        "long": {"type": "string"},
        "address": {"type": "string"},
        "photo": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "name": SHORT,
        "email": {"type": "string"},
        "phone": {"type": "string"},
        "notify": {"type": "string"},
    },
}
REPORTED: Schema = {
    "allOf": [
        ref("PublicOccurrence"),
        {
            "type": "object",
            "required": ["follow_token", "follow_url", "possible_duplicates"],
            "properties": {
                "follow_token": {"type": "string"},
                "follow_url": {"type": "string"},
                "possible_duplicates": {"type": "array", "items": ref("PublicOccurrence")},
            },
        },
    ]
}
ACTION: Schema = {
    "type": "object",
    "required": ["action"],
    "additionalProperties": False,
    "properties": {
        "action": {"enum": list(ACTIONS)},
        "departments": {"type": "array", "items": {"type": "string"}},
        "of": {"type": "integer", "description": "mark_duplicate: the original occurrence"},
        "note": {"type": "string", "maxLength": 4000},
    },
}
UPDATE: Schema = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 4000},
        "public": {"type": "boolean"},
    },
}
CHANGE: Schema = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "category": {"type": "string"},
        "priority": {"enum": list(PRIORITIES)},
        "entities": {"type": "array", "items": {"type": "string"}},
    },
}
CONFIG_ENTRY: Schema = {
    "type": "object",
    "description": "A department {code, name, email, webhook, description}, a category "
    "(docs/occurrences.md), an area {code, name, geometry} or a sensor rule.",
}
LIST = {"type": "array", "items": ref("Occurrence")}
PROBLEM_SCHEMA: Schema = {
    "type": "object",
    "description": "ProblemDetails (RFC 9457): the occurrences' own types "
    "(https://cidade.city/errors/occurrences/...) or the platform's (NGSI-LD's).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "pattern": "^(https://cidade\\.city/errors/|https://uri\\.etsi\\.org/ngsi-ld/errors/)",
        },
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "The field or parameter at fault."},
    },
}
PROBLEM = {"description": "", "content": {"application/json": {"schema": ref("Problem")}}}
STATUS_TEXT = {
    400: "Not valid: the detail says why, `field` names what (nothing was changed).",
    403: "Not allowed: by the gate, or by the workflow (the action's own permission).",
    413: "The body, or a photo, is too large.",
    415: "The body's media type is not accepted here.",
}


def _problem(code: int, description: str) -> dict[str, Any]:
    return {str(code): {**PROBLEM, "description": description}}


def problems(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in (400, 403, *codes):
        out.update(_problem(code, STATUS_TEXT[code]))
    return out


def occurrences_paths() -> dict[str, Any]:
    n = "/occurrences/{number}"
    filters = [
        query("status", "statuses, comma-separated"),
        query("category", "category codes, comma-separated"),
        query("group", "category groups, comma-separated"),
        query("department", "departments holding the occurrence, comma-separated"),
        query("priority", "priorities, comma-separated"),
        query("source", "sources, comma-separated"),
        query("area", "area codes, comma-separated"),
        query("open", "open (true) or not (false)", {"enum": ["true", "false"]}),
        query("created_since", "created at or after (ISO 8601)"),
        query("created_until", "created before (ISO 8601)"),
        query("updated_since", "changed at or after (ISO 8601)"),
        query("updated_until", "changed before (ISO 8601)"),
        query("near", "lat,long,metres"),
        query("bbox", "min_long,min_lat,max_long,max_lat"),
        query("order", "created, -created (default), updated, -updated, number, -number"),
        query("limit", "at most this many (default 50, at most 1000)"),
        query("offset", "skip this many"),
        query("count", "true: the total in X-Total-Count", {"enum": ["true", "false"]}),
    ]
    not_found = _problem(404, "No such occurrence.")
    refused = _problem(409, "Not possible in the occurrence's status (IllegalTransition).")
    return {
        "/occurrences": {
            "get": operation(
                "listOccurrences",
                "The operations room's list of occurrences",
                merge(json_ok(LIST, "Newest first unless ordered otherwise."), problems(400)),
                tag=TAG,
                parameters=[TENANT, *filters],
            ),
            "post": operation(
                "reportOccurrence",
                "Report an occurrence",
                merge(
                    json_ok(
                        REPORTED,
                        "Registered; its follow link and the open occurrences it may duplicate.",
                        201,
                    ),
                    _problem(404, "No such category (UnknownCategory)."),
                    problems(413, 415),
                ),
                tag=TAG,
                parameters=[TENANT],
                request_body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("OccurrenceReport")},
                        "multipart/form-data": {"schema": REPORT_FORM},
                    },
                },
            ),
        },
        "/occurrences/duplicates": {
            "get": operation(
                "findDuplicates",
                "Open occurrences a report here may duplicate",
                merge(
                    json_ok(
                        {"type": "array", "items": ref("PublicOccurrence")},
                        "Nearest first by time.",
                    ),
                    problems(400),
                ),
                tag=TAG,
                parameters=[
                    TENANT,
                    query("category", "the category of the report", required=True),
                    query("lat", "latitude", required=True),
                    query("long", "longitude", required=True),
                ],
            ),
        },
        "/occurrences/follow/{token}": {
            "get": operation(
                "followOccurrence",
                "An occurrence, by its follow link",
                merge(
                    json_ok(ref("PublicOccurrence"), "The public view."),
                    _problem(404, "No occurrence has this token."),
                ),
                tag=TAG,
                parameters=[TENANT, path_param("token", "the follow token")],
            ),
        },
        "/occurrences/config": {
            "get": operation(
                "occurrenceConfiguration",
                "Departments, categories, areas and sensor rules in force",
                json_ok({"type": "object"}, "The tenant's configuration."),
                tag=TAG,
                parameters=[TENANT],
            ),
        },
        "/occurrences/config/{kind}/{key}": {
            method: operation(
                f"{verb}OccurrenceConfiguration",
                summary,
                merge(answer, _problem(404, "No such kind or entry.")),
                tag=TAG,
                parameters=[
                    TENANT,
                    path_param(
                        "kind",
                        "department, category, area or rule",
                        "category",
                        {"enum": ["department", "category", "area", "rule"]},
                    ),
                    path_param("key", "the entry's code", "pothole", CODE),
                ],
                **extra,
            )
            for method, verb, summary, answer, extra in (
                ("get", "read", "One entry", json_ok(CONFIG_ENTRY, "The entry."), {}),
                (
                    "put",
                    "set",
                    "Set an entry (over the configuration file)",
                    merge(no_content(), problems(400, 413, 415)),
                    {"request_body": json_body(CONFIG_ENTRY, "The entry.")},
                ),
                ("delete", "remove", "Remove an entry", merge(no_content(), problems(400)), {}),
            )
        },
        n: {
            "get": operation(
                "getOccurrence",
                "One occurrence, with the actions the caller may take",
                merge(json_ok(ref("Occurrence"), "The occurrence."), not_found),
                tag=TAG,
                parameters=[TENANT, NUMBER],
            ),
            "patch": operation(
                "changeOccurrence",
                "Reclassify, reprioritise, relate hub entities",
                merge(json_ok(ref("Occurrence"), "Changed."), not_found, problems(413, 415)),
                tag=TAG,
                parameters=[TENANT, NUMBER],
                request_body=json_body(CHANGE, "What changes."),
            ),
        },
        f"{n}/history": {
            "get": operation(
                "occurrenceHistory",
                "Every change, oldest first (append-only)",
                merge(
                    json_ok({"type": "array", "items": {"type": "object"}}, "The events."),
                    not_found,
                ),
                tag=TAG,
                parameters=[TENANT, NUMBER],
            ),
        },
        f"{n}/actions": {
            "post": operation(
                "actOnOccurrence",
                "Take a workflow action",
                merge(json_ok(ref("Occurrence"), "Done."), not_found, refused, problems(413, 415)),
                tag=TAG,
                parameters=[TENANT, NUMBER],
                request_body=json_body(ACTION, "The action."),
            ),
        },
        f"{n}/updates": {
            "post": operation(
                "updateOccurrence",
                "Add a public update or an internal note",
                merge(json_ok(ref("Occurrence"), "Added.", 201), not_found, problems(413, 415)),
                tag=TAG,
                parameters=[TENANT, NUMBER],
                request_body=json_body(UPDATE, "The update."),
            ),
        },
        f"{n}/contact": {
            "get": operation(
                "reporterContact",
                "The reporter's contact (audited)",
                merge(
                    json_ok({"type": "object"}, "Name, email, phone, webhook, notify."), not_found
                ),
                tag=TAG,
                parameters=[TENANT, NUMBER],
            ),
        },
        f"{n}/photos/{{photo}}": {
            "get": operation(
                "occurrencePhoto",
                "A photo of an occurrence",
                merge(
                    {
                        "200": {
                            "description": "The photo, without metadata.",
                            "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
                        }
                    },
                    _problem(404, "No such photo."),
                ),
                tag=TAG,
                parameters=[TENANT, NUMBER, path_param("photo", "the photo's id", "p1")],
            ),
        },
    }


def occurrences_part() -> ApiPart:
    paths = occurrences_paths()
    for item in paths.values():
        for op in item.values():
            # The service's refusals (400, 403) are the occurrences' own ProblemDetails types.
            for code in (400, 403):
                op["responses"].update(_problem(code, STATUS_TEXT[code]))
    return ApiPart(
        paths=paths,
        tags={TAG: "Occurrences: report, triage, route and close problems in the city."},
        schemas={
            "Occurrence": OCCURRENCE,
            "PublicOccurrence": PUBLIC_OCCURRENCE,
            "OccurrenceReport": REPORT,
            "Problem": PROBLEM_SCHEMA,
        },
    )
