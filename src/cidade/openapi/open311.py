"""Open311 GeoReport v2 (occurrences/open311.py, docs/api/open311.md): /open311/v2, with
FixMyStreet's servicerequestupdates. Each path takes its format as its extension (.json or
.xml); the schemas below are the JSON, and the XML is the same document in GeoReport's XML
(``services`` holds ``service`` elements, ...). Every error, the gate's and the router's too,
is GeoReport's ``[{code, description}]`` (XML: ``<errors><error>``): this part describes
its access answers itself."""

from __future__ import annotations

from typing import Any

from cidade.occurrences.configuration import ATTRIBUTE_TYPES
from cidade.occurrences.model import STATUSES
from cidade.occurrences.open311_format import MAX_REQUESTS, STATUS_ACTIONS, WINDOW_DAYS
from cidade.openapi.build import ApiPart, operation, path_param, query
from cidade.openapi.schemas import Schema, ref

TAG = "Open311"
V2 = "/open311/v2"
JSON = "application/json"
XML = "text/xml"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

FORMAT = path_param("format", "json or xml: the answer's format", "json", {"enum": ["json", "xml"]})
JURISDICTION = query(
    "jurisdiction_id",
    "The jurisdiction (CIDADE_OPEN311_JURISDICTIONS maps each to a tenant); optional where "
    "one jurisdiction is served, and ignored there.",
)
TEXT: Schema = {"type": ["string", "null"]}
ID: Schema = {"type": "string", "pattern": "^[0-9]+$"}
W3C: Schema = {"type": ["string", "null"], "format": "date-time"}

DISCOVERY: Schema = {
    "type": "object",
    "required": ["changeset", "contact", "key_service", "endpoints"],
    "properties": {
        "changeset": {"type": "string", "format": "date-time"},
        "contact": {"type": "string"},
        "key_service": {"type": "string"},
        "endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["specification", "url", "changeset", "type", "formats"],
                "properties": {
                    "specification": {"type": "string"},
                    "url": {"type": "string"},
                    "changeset": {"type": "string", "format": "date-time"},
                    "type": {"enum": ["production", "test"]},
                    "formats": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
SERVICE: Schema = {
    "type": "object",
    "description": "A category citizens may report (a public one).",
    "required": ["service_code", "service_name", "metadata", "type"],
    "properties": {
        "service_code": {"type": "string"},
        "service_name": {"type": "string"},
        "description": {"type": "string"},
        "metadata": {"type": "boolean", "description": "true: it asks questions (attributes)."},
        "type": {"enum": ["realtime"]},
        "keywords": {"type": "string"},
        "group": {"type": "string"},
    },
}
ATTRIBUTE: Schema = {
    "type": "object",
    "required": ["variable", "code", "datatype", "required", "order", "description"],
    "properties": {
        "variable": {"type": "boolean"},
        "code": {"type": "string"},
        "datatype": {"enum": list(ATTRIBUTE_TYPES)},
        "required": {"type": "boolean"},
        "datatype_description": TEXT,
        "order": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "values": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "name"],
                "properties": {"key": {"type": "string"}, "name": {"type": "string"}},
            },
        },
    },
}
DEFINITION: Schema = {
    "type": "object",
    "required": ["service_code", "attributes"],
    "properties": {
        "service_code": {"type": "string"},
        "attributes": {"type": "array", "items": ref("Open311Attribute")},
    },
}
REQUEST: Schema = {
    "type": "object",
    "description": "An occurrence as a service request: never its reporter's name, e-mail or "
    "phone. status_notes is its latest public update; agency_responsible its departments; "
    "expected_datetime its resolution deadline; media_url the link it was reported with, or "
    "its first photo.",
    "required": ["service_request_id", "status", "service_code", "requested_datetime"],
    "properties": {
        "service_request_id": ID,
        "status": {"enum": ["open", "closed"]},
        "status_notes": TEXT,
        "service_name": TEXT,
        "service_code": {"type": "string"},
        "description": TEXT,
        "agency_responsible": TEXT,
        "service_notice": TEXT,
        "requested_datetime": W3C,
        "updated_datetime": W3C,
        "expected_datetime": W3C,
        "address": TEXT,
        "address_id": TEXT,
        "zipcode": TEXT,
        "lat": {"type": ["number", "null"]},
        "long": {"type": ["number", "null"]},
        "media_url": TEXT,
    },
}
CREATED: Schema = {
    "type": "object",
    "required": ["service_request_id", "token"],
    "properties": {
        "service_request_id": ID,
        "token": {
            "type": "string",
            "description": "Also the key to the reporter's follow page: give it to them only.",
        },
        "service_notice": TEXT,
        "account_id": {"type": "null"},
    },
}
TOKEN: Schema = {
    "type": "object",
    "required": ["service_request_id", "token"],
    "properties": {"service_request_id": ID, "token": {"type": "string"}},
}
UPDATE: Schema = {
    "type": "object",
    "description": "A public change of an occurrence (FixMyStreet's request_update): its "
    "status after it, in FixMyStreet's extended statuses, and the public text if any.",
    "required": ["update_id", "service_request_id", "status", "updated_datetime"],
    "properties": {
        "update_id": ID,
        "service_request_id": ID,
        "status": {"enum": sorted({s.fixmystreet for s in STATUSES.values()})},
        "updated_datetime": W3C,
        "description": {"type": "string"},
        "media_url": TEXT,
    },
}
UPDATE_CREATED: Schema = {
    "type": "object",
    "required": ["update_id"],
    "properties": {"update_id": ID},
}
ERROR: Schema = {
    "type": "object",
    "required": ["code", "description"],
    "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
}
REPORT_FORM: Schema = {
    "type": "object",
    "description": "A new service request. A location is lat and long, address_string or "
    "address_id. first_name, last_name, email and phone are private: kept for telling the "
    "reporter, never shown; all may be left out (anonymous). device_id and account_id are "
    "accepted and not kept. Attribute answers: `attribute[code]=value`, a multivaluelist's "
    "`attribute[code][]=value` once per value. As multipart/form-data, file parts are photos.",
    "required": ["api_key", "service_code"],
    "properties": {
        "api_key": {"type": "string", "description": "A Cidade API key of the tenant's."},
        "jurisdiction_id": {"type": "string"},
        "service_code": {"type": "string"},
        "lat": {"type": "string"},
        "long": {"type": "string"},
        "address_string": {"type": "string", "maxLength": 500},
        "address_id": {"type": "string", "maxLength": 200},
        "email": {"type": "string"},
        "device_id": {"type": "string"},
        "account_id": {"type": "string"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "phone": {"type": "string"},
        "description": {
            "type": "string",
            "maxLength": 4000,
            "description": "Plain text: markup is removed.",
        },
        "media_url": {"type": "string", "description": "An http(s) URL of a photo or video."},
    },
    "additionalProperties": {"type": "string"},
}
UPDATE_FORM: Schema = {
    "type": "object",
    "description": "A public update of a service request. A status whose workflow action "
    "(INVESTIGATING: accept, ACTION_SCHEDULED: assign, IN_PROGRESS: start, FIXED: resolve, "
    "CLOSED: close, NO_FURTHER_ACTION / NOT_COUNCILS_RESPONSIBILITY / CANCELLED: reject, OPEN "
    "/ REOPEN: reopen) the key's holder may take from the occurrence's status is taken with "
    "the description as its public note; otherwise the description is recorded as a public "
    "update. update_id, the sender's id, makes a repeated POST answer the first update. "
    "email, first_name, last_name, phone and media_url are accepted and not kept.",
    "required": ["api_key", "service_request_id"],
    "properties": {
        "api_key": {"type": "string"},
        "jurisdiction_id": {"type": "string"},
        "service_request_id": {"type": "string"},
        "update_id": {"type": "string", "maxLength": 200},
        "status": {"enum": sorted(STATUS_ACTIONS)},
        "updated_datetime": {"type": "string", "format": "date-time"},
        "description": {"type": "string", "maxLength": 4000},
        "email": {"type": "string"},
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "media_url": {"type": "string"},
    },
    "additionalProperties": {"type": "string"},
}


def _ok(schema: Schema, description: str, *, many: bool = True) -> dict[str, Any]:
    json_schema = {"type": "array", "items": schema} if many else schema
    return {
        "200": {
            "description": description,
            "content": {
                JSON: {"schema": json_schema},
                XML: {"schema": {"type": "string", "description": "GeoReport XML"}},
            },
        }
    }


def _errors(**described: str) -> dict[str, Any]:
    """GeoReport error answers: 400, 403, 404 and 429, which any operation may meet (an
    unknown jurisdiction or format is 404), and those ``described`` (e413="...")."""
    texts = {
        "400": "Not valid; the description says why (nothing was changed).",
        "403": "api_key missing or invalid, not of this jurisdiction's tenant, or the key's "
        "holder may not do this.",
        "404": "No such service, service request, token, jurisdiction, or format.",
        "429": "Too many requests; Retry-After says when again.",
        **{code.removeprefix("e"): text for code, text in described.items()},
    }
    out = {}
    for code, text in texts.items():
        out[code] = {
            "description": text,
            "content": {
                JSON: {"schema": {"type": "array", "items": ref("Open311Error")}},
                XML: {"schema": {"type": "string", "description": "<errors><error>..."}},
            },
        }
    return out


def _form(schema: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {FORM: {"schema": ref(schema)}, MULTIPART: {"schema": ref(schema)}},
    }


def open311_paths() -> dict[str, Any]:
    window = (
        f"Requests made between start_date and end_date (W3C date-times; at most"
        f" {WINDOW_DAYS} days apart; the last {WINDOW_DAYS} days when neither is given), newest"
        f" first, at most {MAX_REQUESTS}."
    )

    def op(op_id: str, summary: str, responses: dict[str, Any], *params: Any, **kw: Any) -> Any:
        return operation(op_id, summary, responses, tag=TAG, parameters=[FORMAT, *params], **kw)

    return {
        f"{V2}/discovery.{{format}}": {
            "get": op(
                "open311Discovery",
                "Open311 service discovery",
                _ok(ref("Open311Discovery"), "Where the endpoint is, who to ask.", many=False),
            )
        },
        f"{V2}/services.{{format}}": {
            "get": op(
                "open311Services",
                "Open311: the services (public categories)",
                _ok(ref("Open311Service"), "The services."),
                JURISDICTION,
            )
        },
        f"{V2}/services/{{service_code}}.{{format}}": {
            "get": op(
                "open311ServiceDefinition",
                "Open311: a service's definition (its questions)",
                _ok(ref("Open311ServiceDefinition"), "The definition.", many=False),
                path_param("service_code", "the service's code", "pothole"),
                JURISDICTION,
            )
        },
        f"{V2}/requests.{{format}}": {
            "get": op(
                "open311Requests",
                "Open311: search service requests",
                _ok(ref("Open311Request"), window),
                JURISDICTION,
                query(
                    "service_request_id",
                    "Service request ids, comma-separated: these alone (the other parameters "
                    "are not looked at).",
                ),
                query("service_code", "Service codes, comma-separated."),
                query("start_date", "Requested at or after (W3C date-time)."),
                query("end_date", "Requested before (W3C date-time)."),
                query("status", "open, closed or both, comma-separated."),
                query(
                    "agency_responsible",
                    "FixMyStreet's: departments holding them, '|' between codes.",
                ),
                query("max_requests", f"FixMyStreet's: at most this many (up to {MAX_REQUESTS})."),
            ),
            "post": op(
                "open311CreateRequest",
                "Open311: report a problem (a service request)",
                {
                    **_ok(ref("Open311RequestCreated"), "Registered."),
                    **_errors(e413="The body is too large.", e415="Not a form."),
                },
                request_body=_form("Open311RequestForm", "The report, as a form."),
            ),
        },
        f"{V2}/requests/{{service_request_id}}.{{format}}": {
            "get": op(
                "open311Request",
                "Open311: one service request",
                _ok(ref("Open311Request"), "The service request (a list of one)."),
                path_param("service_request_id", "the service request's id", "1"),
                JURISDICTION,
            )
        },
        f"{V2}/tokens/{{token}}.{{format}}": {
            "get": op(
                "open311Token",
                "Open311: the service request of a token",
                _ok(ref("Open311Token"), "Its service request (a list of one)."),
                path_param("token", "the token a POST of requests answered"),
                JURISDICTION,
            )
        },
        f"{V2}/servicerequestupdates.{{format}}": {
            "get": op(
                "open311Updates",
                "FixMyStreet: public updates of service requests",
                _ok(
                    ref("Open311Update"),
                    f"Updates made between start_date and end_date (at most {WINDOW_DAYS} "
                    f"days apart; the last {WINDOW_DAYS} days by default), oldest first, at "
                    f"most {MAX_REQUESTS}.",
                ),
                JURISDICTION,
                query("start_date", "Made at or after (W3C date-time)."),
                query("end_date", "Made before (W3C date-time)."),
            ),
            "post": op(
                "open311CreateUpdate",
                "FixMyStreet: post a public update of a service request",
                {
                    **_ok(ref("Open311UpdateCreated"), "Recorded."),
                    **_errors(e413="The body is too large.", e415="Not a form."),
                },
                request_body=_form("Open311UpdateForm", "The update, as a form."),
            ),
        },
    }


def open311_part() -> ApiPart:
    paths = open311_paths()
    for item in paths.values():
        for op in item.values():
            for code, answer in _errors().items():
                op["responses"].setdefault(code, answer)
    return ApiPart(
        paths=paths,
        tags={
            TAG: "Open311 GeoReport v2 and FixMyStreet's servicerequestupdates: Open311 apps "
            "and FixMyStreet report to the city and follow their reports."
        },
        schemas={
            "Open311Discovery": DISCOVERY,
            "Open311Service": SERVICE,
            "Open311Attribute": ATTRIBUTE,
            "Open311ServiceDefinition": DEFINITION,
            "Open311Request": REQUEST,
            "Open311RequestCreated": CREATED,
            "Open311Token": TOKEN,
            "Open311Update": UPDATE,
            "Open311UpdateCreated": UPDATE_CREATED,
            "Open311Error": ERROR,
            "Open311RequestForm": REPORT_FORM,
            "Open311UpdateForm": UPDATE_FORM,
        },
        own_access_errors=True,
    )
