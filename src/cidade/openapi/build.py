"""Small builders the API areas describe their operations with: parameters, request bodies,
responses (success and ProblemDetails errors) and the ApiPart an area contributes.

An area (``hub.py``, ``temporal.py``, ...) is a function returning an ``ApiPart``: its paths
(OpenAPI path items keyed by path template, whose parameter names are the route's) and any
component schemas of its own. ``document.py`` merges the parts into one document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cidade.http.bodies import GEO_JSON, JSON, JSON_LD, MERGE_PATCH
from cidade.openapi.schemas import Schema, ref

Operation = dict[str, Any]
PathItem = dict[str, Operation]


@dataclass
class ApiPart:
    """What one capability adds to the document: its paths, the tags its operations use (name ->
    description), and component schemas of its own (names must not clash with other parts')."""

    paths: dict[str, PathItem]
    tags: dict[str, str] = field(default_factory=dict)
    schemas: dict[str, Schema] = field(default_factory=dict)
    # Its operations describe the gate's refusals themselves, in their own error envelope
    # (Open311's): the document adds no ProblemDetails answers to them.
    own_access_errors: bool = False


# -- parameters ---------------------------------------------------------------------------------


def header(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


TENANT = header("Tenant")
LINK = header("Link")


def path_param(
    name: str, description: str, example: str | None = None, schema: Schema | None = None
) -> dict[str, Any]:
    schema = schema or {"type": "string", "minLength": 1}
    param: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }
    if example is not None:
        param["example"] = example
    return param


def query(
    name: str, description: str, schema: Schema | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
        **extra,
    }


def boolean_query(name: str, description: str) -> dict[str, Any]:
    # Sent and read as the words true / false.
    return query(name, description, {"type": "string", "enum": ["true", "false"]})


# -- request bodies -----------------------------------------------------------------------------


def body(schema: Schema, description: str, *, merge_patch: bool = False) -> dict[str, Any]:
    """A JSON body, sent as application/json (@context from the Link header) or
    application/ld+json (@context in the body); merge-patch+json where the operation merges."""
    kinds = [JSON, JSON_LD, MERGE_PATCH] if merge_patch else [JSON, JSON_LD]
    return {
        "required": True,
        "description": description,
        "content": {kind: {"schema": schema} for kind in kinds},
    }


# -- responses ----------------------------------------------------------------------------------

ERRORS = {
    400: ("BadRequest", "The request or its data is not valid (BadRequestData, InvalidRequest)."),
    401: (
        "Unauthenticated",
        "No credentials where they are needed, or credentials that do not hold "
        "(Unauthenticated); `WWW-Authenticate` says how to authenticate.",
    ),
    403: (
        "Forbidden",
        "The caller may not do this here (AccessDenied), or `limit` is above the maximum "
        "(TooManyResults).",
    ),
    404: ("NotFound", "No such resource, or the tenant does not exist (ResourceNotFound)."),
    405: ("MethodNotAllowed", "The path does not take this method; `Allow` lists those it does."),
    406: ("NotAcceptable", "No media type of the Accept header can be served."),
    409: ("AlreadyExists", "The resource exists already (AlreadyExists)."),
    413: ("PayloadTooLarge", "The body is larger than the broker accepts."),
    415: ("UnsupportedMediaType", "The Content-Type of the body is not accepted here."),
    422: ("OperationNotSupported", "The operation is not supported on this resource."),
    429: ("TooManyRequests", "Too many requests from this caller; `Retry-After` says when again."),
    501: ("NotImplemented", "A feature of the request is not implemented by this broker."),
    503: (
        "LdContextNotAvailable",
        "A remote @context the request refers to cannot be retrieved (LdContextNotAvailable).",
    ),
    504: (
        "ContextReloadFailed",
        "The @context could not be downloaded again (LdContextNotAvailable); the old copy stays.",
    ),
}


def error_responses() -> dict[str, Any]:
    """components/responses: one ProblemDetails response per error status."""
    return {
        name: {
            "description": description,
            "content": {JSON: {"schema": ref("ProblemDetails")}},
        }
        for name, description in ERRORS.values()
    }


def problems(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in codes}


# The errors most operations share: a bad request, a missing tenant or resource.
READ_ERRORS = (400, 404, 406, 503)
WRITE_ERRORS = (400, 404, 413, 415, 503)

LINK_HEADER = {
    "Link": {
        "description": "The @context the response is compacted with (application/json only).",
        "schema": {"type": "string"},
    }
}
RESULTS_COUNT = {
    "NGSILD-Results-Count": {
        "description": "The number of matching results, with count=true.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
LOCATION = {
    "Location": {
        "description": "The URL of the resource created.",
        "required": True,
        "schema": {"type": "string"},
    }
}
CONTENT_RANGE = {
    "Content-Range": {
        "description": "The page's time range: `date-time <start>-<end>/<size>` (§6.3.10).",
        "required": True,
        "schema": {"type": "string", "pattern": "^date-time "},
    }
}


def ok(
    schema: Schema,
    description: str,
    *,
    status: int = 200,
    geo: Schema | None = None,
    ld: bool = True,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A success response with a JSON body: application/json, also application/ld+json when the
    operation negotiates (``ld``), and application/geo+json with the schema ``geo``."""
    content: dict[str, Any] = {JSON: {"schema": schema}}
    if ld:
        content[JSON_LD] = {"schema": schema}
    if geo is not None:
        content[GEO_JSON] = {"schema": geo}
    response: dict[str, Any] = {"description": description, "content": content}
    if headers:
        response["headers"] = headers
    return {str(status): response}


def json_ok(
    schema: Schema, description: str, status: int = 200, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A success answer in plain application/json (the platform's own APIs: /auth, /iot)."""
    return ok(schema, description, status=status, ld=False, headers=headers)


def json_body(schema: Schema, description: str) -> dict[str, Any]:
    """A required application/json request body (the platform's own APIs)."""
    return {"required": True, "description": description, "content": {JSON: {"schema": schema}}}


def no_content(description: str = "Done; no body.") -> dict[str, Any]:
    return {"204": {"description": description}}


def created(description: str) -> dict[str, Any]:
    return {"201": {"description": description, "headers": LOCATION}}


def operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    parameters: list[dict[str, Any]] | None = None,
    request_body: dict[str, Any] | None = None,
    description: str | None = None,
) -> Operation:
    op: Operation = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if request_body is not None:
        op["requestBody"] = request_body
    op["responses"] = responses
    return op


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


# -- collections --------------------------------------------------------------------------------

# The errors of creating a resource: a bad body, one that exists, too large, not JSON, a
# @context that cannot be retrieved.
CREATE_ERRORS = (400, 409, 413, 415, 503)


def create_operation(
    operation_id: str, summary: str, *, tag: str, schema: str, what: str
) -> Operation:
    """POST of a resource: its body the component schema ``schema``, described as ``what``;
    201 with its Location."""
    return operation(
        operation_id,
        summary,
        merge(created("Created."), problems(*CREATE_ERRORS)),
        tag=tag,
        parameters=[TENANT, LINK],
        request_body=body(ref(schema), what),
    )


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection of NGSI-LD resources (subscriptions, registrations) that clients create and
    query on its path, retrieve, update (merge) and delete on one's. ``schema`` names the
    component schemas of one resource: ``schema`` (as answered), ``schema``Input (created) and
    ``schema``Fragment (an update). ``operations`` gives the (operationId, summary) of create,
    query, retrieve, update and delete, in that order."""

    path: str
    item: dict[str, Any]  # the path parameter that names one resource
    tag: str
    schema: str
    noun: str  # "subscription": "The subscription."
    listed: str  # what a query answers
    operations: tuple[tuple[str, str], ...]
    filters: tuple[dict[str, Any], ...]  # the parameters of a query (after Tenant and Link)
    options: tuple[dict[str, Any], ...] = ()  # further parameters of a retrieval


def collection_paths(c: Collection) -> dict[str, PathItem]:
    """The two path items of a collection: ``c.path`` and ``c.path/{item}``."""
    create, query_, retrieve, update, delete = c.operations
    return {
        c.path: {
            "post": create_operation(
                *create, tag=c.tag, schema=f"{c.schema}Input", what=f"The {c.noun}."
            ),
            "get": operation(
                *query_,
                merge(
                    ok(
                        {"type": "array", "items": ref(c.schema)},
                        c.listed,
                        headers={**LINK_HEADER, **RESULTS_COUNT},
                    ),
                    problems(400, 403, 404, 406, 503),
                ),
                tag=c.tag,
                parameters=[TENANT, LINK, *c.filters],
            ),
        },
        f"{c.path}/{{{c.item['name']}}}": {
            "get": operation(
                *retrieve,
                merge(
                    ok(ref(c.schema), f"The {c.noun}.", headers=LINK_HEADER),
                    problems(*READ_ERRORS),
                ),
                tag=c.tag,
                parameters=[c.item, TENANT, LINK, *c.options],
            ),
            "patch": operation(
                *update,
                merge(no_content("Updated."), problems(*WRITE_ERRORS)),
                tag=c.tag,
                parameters=[c.item, TENANT, LINK],
                request_body=body(
                    ref(f"{c.schema}Fragment"), "The members to change.", merge_patch=True
                ),
            ),
            "delete": operation(
                *delete,
                merge(no_content("Deleted."), problems(400, 404)),
                tag=c.tag,
                parameters=[c.item, TENANT],
            ),
        },
    }
