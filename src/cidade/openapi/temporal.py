"""The temporal API (hub/temporal_api.py, TemporalApi.routes()): history of entities."""

from __future__ import annotations

from typing import Any

from cidade.hub.api import PREFIX
from cidade.openapi.build import (
    CONTENT_RANGE,
    LINK,
    LINK_HEADER,
    RESULTS_COUNT,
    TENANT,
    WRITE_ERRORS,
    ApiPart,
    body,
    boolean_query,
    created,
    merge,
    no_content,
    ok,
    operation,
    path_param,
    problems,
    query,
)
from cidade.openapi.hub import ATTR_ID, ATTRS, ENTITY_FILTERS, ENTITY_ID, OMIT, PICK, list_param
from cidade.openapi.schemas import DATE_TIME, LD_CONTEXT, NAMES, STRING_OR_STRINGS, URI, Schema, ref

TAG = "Temporal"

TEMPORAL_ENTITY: Schema = {
    "type": "object",
    "description": "The temporal evolution of an entity (§4.5.7, §4.5.8, §4.5.19): per attribute "
    "its instances (normalized: an array of attribute instances; temporalValues: an object with "
    "`values` of [value, time] pairs; aggregatedValues: an object per aggregation method). "
    "`deletedAt` is set for an entity deleted with its history kept.",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string"},
        "type": STRING_OR_STRINGS,
        "deletedAt": DATE_TIME,
        "@context": LD_CONTEXT,
    },
}

TEMPORAL_INPUT: Schema = {
    "type": "object",
    "description": "A temporal representation to write: `id` (a URI) and `type`, and per "
    "attribute an instance or an array of instances (each with its observedAt).",
    "required": ["id", "type"],
    "properties": {"id": URI, "type": NAMES, "@context": LD_CONTEXT},
}

TEMPORAL_FRAGMENT: Schema = {
    "type": "object",
    "description": "Attributes to add to the history: per attribute an instance or an array.",
}

TEMPORAL_PARAMS = [
    query(
        "timerel",
        "The time relation: before, after, between (with timeAt; between needs endTimeAt).",
        {"type": "string", "enum": ["before", "after", "between"]},
    ),
    query("timeAt", "An ISO 8601 date-time.", {"type": "string"}),
    query("endTimeAt", "An ISO 8601 date-time, later than timeAt (between).", {"type": "string"}),
    query(
        "timeproperty",
        "The time each instance is selected by (default observedAt); deletedAt: the deletions.",
        {"type": "string", "enum": ["observedAt", "createdAt", "modifiedAt", "deletedAt"]},
    ),
    query(
        "lastN", "Only the last N instances of each attribute.", {"type": "integer", "minimum": 1}
    ),
    list_param("options", "temporalValues | aggregatedValues (the representation), sysAttrs."),
    query(
        "format",
        "The representation: normalized (default), temporalValues, aggregatedValues.",
        {"type": "string", "enum": ["normalized", "temporalValues", "aggregatedValues"]},
    ),
    list_param(
        "aggrMethods",
        "With aggregatedValues: totalCount, distinctCount, sum, avg, min, max, stddev, sumsq.",
    ),
    query(
        "aggrPeriodDuration",
        "With aggregatedValues: the period each aggregation covers, an ISO 8601 duration.",
    ),
]

TEMPORAL_QUERY: Schema = {
    "type": "object",
    "description": "§5.2.23 Query with its temporalQ (§5.2.21): what POST "
    "/temporal/entityOperations/query selects; the representation comes from the query "
    "parameters.",
    "required": ["type"],
    "properties": {
        "type": {"const": "Query"},
        "entities": {"type": "array", "items": {"type": "object"}},
        "attrs": {"type": "array", "items": {"type": "string"}},
        "q": {"type": "string"},
        "geoQ": {"type": "object"},
        "ordering": {
            "type": "object",
            "description": "§5.2.43 OrderingParams: orderBy and collation as the query "
            "parameters (§4.23).",
            "required": ["orderBy"],
            "properties": {
                "orderBy": {"type": "array", "items": {"type": "string"}},
                "collation": {"type": "string"},
            },
        },
        "temporalQ": {
            "type": "object",
            "properties": {
                "timerel": {"type": "string", "enum": ["before", "after", "between"]},
                "timeAt": {"type": "string"},
                "endTimeAt": {"type": "string"},
                "timeproperty": {"type": "string"},
                "lastN": {"type": "integer", "minimum": 1},
            },
        },
        "@context": LD_CONTEXT,
    },
}

PAGE = ok(
    {"type": "array", "items": ref("TemporalEntity")},
    "One page of the instances (§6.3.10); Content-Range tells which.",
    status=206,
    headers={**LINK_HEADER, **RESULTS_COUNT, **CONTENT_RANGE},
)


def temporal_paths() -> dict[str, Any]:
    base = f"{PREFIX}/temporal/entities"
    one = f"{base}/{{entity_id}}"
    attr = f"{one}/attrs/{{attr_id}}"
    return {
        base: {
            "get": operation(
                "queryTemporalEntities",
                "Query Temporal Evolution of Entities (§6.18.3.2)",
                merge(
                    ok(
                        {"type": "array", "items": ref("TemporalEntity")},
                        "The temporal evolution of the matching entities.",
                        headers={**LINK_HEADER, **RESULTS_COUNT},
                    ),
                    PAGE,
                    problems(400, 403, 404, 406, 501, 503),
                ),
                tag=TAG,
                parameters=[TENANT, LINK, *ENTITY_FILTERS, PICK, OMIT, *TEMPORAL_PARAMS],
            ),
            "post": operation(
                "createUpdateTemporalEntity",
                "Create or Update Temporal Representation of an Entity (§6.18.3.1)",
                merge(
                    created("The entity was created with this history."),
                    no_content("The instances were added to the entity's history."),
                    problems(400, 409, 413, 415, 503),
                ),
                tag=TAG,
                parameters=[TENANT, LINK],
                request_body=body(ref("TemporalEntityInput"), "The temporal representation."),
            ),
        },
        f"{PREFIX}/temporal/entityOperations/query": {
            "post": operation(
                "queryTemporalEntitiesViaPost",
                "Query Temporal Evolution of Entities via POST (§6.24.3.1)",
                merge(
                    ok(
                        {"type": "array", "items": ref("TemporalEntity")},
                        "The temporal evolution of the matching entities.",
                        headers={**LINK_HEADER, **RESULTS_COUNT},
                    ),
                    PAGE,
                    problems(400, 403, 404, 406, 413, 415, 503),
                ),
                tag=TAG,
                parameters=[
                    TENANT,
                    LINK,
                    query("limit", "Entities per page.", {"type": "integer", "minimum": 0}),
                    query("offset", "Entities to skip.", {"type": "integer", "minimum": 0}),
                    boolean_query("count", "true: the number of matches in NGSILD-Results-Count."),
                    PICK,
                    OMIT,
                    *TEMPORAL_PARAMS,
                ],
                request_body=body(ref("TemporalQuery"), "What to select, and when."),
            )
        },
        one: {
            "get": operation(
                "retrieveTemporalEntity",
                "Retrieve Temporal Evolution of an Entity (§6.19.3.1)",
                merge(
                    ok(ref("TemporalEntity"), "Its temporal evolution.", headers=LINK_HEADER),
                    {
                        "206": {
                            **PAGE["206"],
                            "content": {
                                k: {"schema": ref("TemporalEntity")} for k in PAGE["206"]["content"]
                            },
                        }
                    },
                    problems(400, 404, 406, 501, 503),
                ),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT, LINK, ATTRS, PICK, OMIT, *TEMPORAL_PARAMS],
            ),
            "delete": operation(
                "deleteTemporalEntity",
                "Delete Temporal Representation of an Entity (§6.19.3.2)",
                merge(no_content("The entity and its history are deleted."), problems(400, 404)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT],
            ),
        },
        f"{one}/attrs": {
            "post": operation(
                "addTemporalAttrs",
                "Add Attributes to Temporal Representation of an Entity (§6.20.3.1)",
                merge(no_content("Added."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT, LINK],
                request_body=body(ref("TemporalFragment"), "The instances to add."),
            )
        },
        attr: {
            "delete": operation(
                "deleteTemporalAttr",
                "Delete Attribute from Temporal Representation of an Entity (§6.21.3.1)",
                merge(no_content("Deleted."), problems(400, 404, 503)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    ATTR_ID,
                    TENANT,
                    LINK,
                    query("datasetId", "Only the instances with this datasetId."),
                    boolean_query("deleteAll", "true: instances of every datasetId."),
                ],
            )
        },
        f"{attr}/{{instance_id}}": {
            "patch": operation(
                "modifyTemporalAttrInstance",
                "Modify Attribute Instance in Temporal Representation (§6.22.3.1)",
                merge(no_content("Modified."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    ATTR_ID,
                    path_param("instance_id", "The instanceId (a URI)."),
                    TENANT,
                    LINK,
                ],
                request_body=body(ref("AttributeFragment"), "The new instance."),
            ),
            "delete": operation(
                "deleteTemporalAttrInstance",
                "Delete Attribute Instance from Temporal Representation (§6.22.3.2)",
                merge(no_content("Deleted."), problems(400, 404, 503)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    ATTR_ID,
                    path_param("instance_id", "The instanceId (a URI)."),
                    TENANT,
                    LINK,
                ],
            ),
        },
    }


def temporal_part() -> ApiPart:
    return ApiPart(
        paths=temporal_paths(),
        tags={TAG: "The history of entities (§6.18-§6.22): read, aggregated, paged, written."},
        schemas={
            "TemporalEntity": TEMPORAL_ENTITY,
            "TemporalEntityInput": TEMPORAL_INPUT,
            "TemporalFragment": TEMPORAL_FRAGMENT,
            "TemporalQuery": TEMPORAL_QUERY,
        },
    )
