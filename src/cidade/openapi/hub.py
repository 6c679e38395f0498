"""The NGSI-LD context hub's own routes (hub/api.py, HubApi.routes()): entities, attributes,
batch operations, discovery and @context management."""

from __future__ import annotations

from typing import Any

from cidade.hub.api import PREFIX
from cidade.openapi.build import (
    LINK,
    LINK_HEADER,
    READ_ERRORS,
    RESULTS_COUNT,
    TENANT,
    WRITE_ERRORS,
    ApiPart,
    body,
    boolean_query,
    create_operation,
    created,
    merge,
    no_content,
    ok,
    operation,
    path_param,
    problems,
    query,
)
from cidade.openapi.schemas import STRING, URI, ref

TAG = "Entities"
BATCH = "Batch operations"
DISCOVERY = "Discovery"
CONTEXTS = "@context management"

ENTITY_ID = path_param(
    "entity_id",
    "The entity id, a URI (URL-encoded).",
    example="urn:ngsi-ld:Example:openapi-1",
    schema=URI,
)
ATTR_ID = path_param("attr_id", "An attribute name (a term of the @context, or an IRI).")


def list_param(name: str, description: str) -> dict[str, Any]:
    """A comma-separated list parameter (empty elements are ignored)."""
    return query(
        name,
        description,
        {"type": "array", "items": {"type": "string"}},
        style="form",
        explode=False,
    )


# -- query parameters, shared with the temporal API ---------------------------------------------

OPTIONS = list_param(
    "options",
    "keyValues | concise | normalized (the representation, before `format` existed), sysAttrs "
    "(createdAt, modifiedAt); the batch and attribute operations take their own options.",
)
FORMAT = query(
    "format",
    "The representation: normalized (default), concise, keyValues (simplified is keyValues).",
    {"type": "string", "enum": ["normalized", "concise", "keyValues", "simplified"]},
)
ATTRS = list_param("attrs", "Only these attributes (and, in queries, entities having one of them).")
PICK = query(
    "pick",
    "Only these members (attributes, id, type, scope), `,` or `|` between them; braces after a "
    "relationship pick members of the entities it links to (`id,locatedAt{name}`); not with "
    "attrs, nor naming a member omit names.",
)
OMIT = query(
    "omit",
    "All members but these; braces after a relationship omit members of the entities it links "
    "to (`locatedAt{name}`); not with attrs, nor naming a member pick names.",
)
DATASET_ID = list_param(
    "datasetId", "Only the attribute instances with these datasetIds (@none: the default one)."
)
JOIN = query(
    "join",
    "Linked entity retrieval: the entities the relationships link to, inside each relationship "
    "(inline) or after the entities (flat).",
    {"type": "string", "enum": ["flat", "inline", "@none"]},
)
JOIN_LEVEL = query(
    "joinLevel",
    "How many relationships deep join goes (default 1).",
    {"type": "integer", "minimum": 1, "maximum": 10},
)
SCOPE_Q = query(
    "scopeQ",
    "A scope query: `/Porto/+/Aliados`, `/CompanyA/#`, `;` (and), `,` or `|` (or).",
)
LANG = query("lang", "Preferred languages of LanguageProperty values (`*` for all).")
GEOMETRY_PROPERTY = query(
    "geometryProperty",
    "With Accept: application/geo+json, the GeoProperty that becomes the geometry (location).",
)
LIMIT = query(
    "limit",
    "At most this many results (default 20); above the broker's maximum is 403.",
    {"type": "integer", "minimum": 0},
)
OFFSET = query(
    "offset", "Skip this many results.", {"type": "integer", "minimum": 0, "maximum": 2**62}
)
COUNT = boolean_query("count", "true: give the number of results in NGSILD-Results-Count.")
ENTITY_FILTERS = [
    list_param("id", "Entity ids (URIs)."),
    query("idPattern", "A regular expression entity ids must match (a search)."),
    query("type", "A type expression: `A,B` or `A|B` (either), `A;B` (both), parentheses."),
    ATTRS,
    query("q", 'A query in the NGSI-LD query language, e.g. `temperature>20;status=="ok"`.'),
    query("georel", "A geo relation: near;maxDistance==M, within, contains, intersects, ..."),
    query(
        "geometry",
        "The query geometry's type.",
        {
            "type": "string",
            "enum": [
                "Point",
                "MultiPoint",
                "LineString",
                "MultiLineString",
                "Polygon",
                "MultiPolygon",
            ],
        },
    ),
    query("coordinates", "The query geometry's coordinates, as JSON (URL-encoded)."),
    query("geoproperty", "The GeoProperty the geo-query applies to (default location)."),
    boolean_query("local", "true: allow a query without any filter."),
    query(
        "orderBy",
        "Order before paging (§4.23): keys in turn, each id, type, scope, createdAt, modifiedAt or "
        "an attribute path as in q (`name.observedAt`, `address[city]`), then `;asc` (default) "
        "or `;desc`: `name,height;desc`.",
    ),
    query(
        "collation",
        "With orderBy, strings by this ICU collation (a BCP 47 tag, RFC 6067: `de-u-co-phonebk`, "
        "`und-u-kn`); ICU's root collation by default.",
    ),
    LIMIT,
    OFFSET,
    COUNT,
]
REPRESENTATION = [OPTIONS, FORMAT, PICK, OMIT, LANG, GEOMETRY_PROPERTY]
DETAILS = boolean_query("details", "true: the full description of each item.")

ENTITY_OK = ok(
    ref("Entity"),
    "The entity; as a GeoJSON Feature with Accept: application/geo+json.",
    geo=ref("Feature"),
    headers=LINK_HEADER,
)
ENTITIES_OK = ok(
    {"type": "array", "items": ref("Entity")},
    "The matching entities (a FeatureCollection with Accept: application/geo+json).",
    geo=ref("FeatureCollection"),
    headers={**LINK_HEADER, **RESULTS_COUNT},
)
UPDATE_RESULT = ok(ref("UpdateResult"), "Some attributes were not changed.", status=207, ld=False)
BATCH_RESULT = ok(
    ref("BatchOperationResult"), "Some entities failed; the others succeeded.", status=207, ld=False
)
ENTITY_ARRAY = {"type": "array", "items": ref("EntityInput")}


def entities_paths() -> dict[str, Any]:
    one = f"{PREFIX}/entities/{{entity_id}}"
    attrs = f"{one}/attrs"
    return {
        f"{PREFIX}/entities": {
            "post": create_operation(
                "createEntity",
                "Create Entity (§6.4.3.1)",
                tag=TAG,
                schema="EntityInput",
                what="The entity.",
            ),
            "get": operation(
                "queryEntity",
                "Query Entities (§6.4.3.2)",
                merge(ENTITIES_OK, problems(*READ_ERRORS, 403, 501)),
                tag=TAG,
                description="Needs at least one filter (id, idPattern, type, attrs, q, a "
                "geo-query) or local=true.",
                parameters=[
                    TENANT,
                    LINK,
                    *ENTITY_FILTERS,
                    SCOPE_Q,
                    *REPRESENTATION,
                    DATASET_ID,
                    JOIN,
                    JOIN_LEVEL,
                ],
            ),
            "put": operation(
                "replaceEntityWithoutId",
                "Replace Entity without an entity id (§6.5.3.3): always 400",
                problems(400),
                tag=TAG,
                description="`PUT /entities/` (the same as `PUT /entities`) names no entity.",
            ),
            "patch": operation(
                "mergeEntityWithoutId",
                "Merge Entity without an entity id (§6.5.3.4): always 400",
                problems(400),
                tag=TAG,
                description="`PATCH /entities/` (the same as `PATCH /entities`) names no entity.",
            ),
            "delete": operation(
                "deleteEntityWithoutId",
                "Delete Entity without an entity id (§6.5.3.2): always 400",
                problems(400),
                tag=TAG,
                description="`DELETE /entities/` names no entity; Purge Entities (NGSI-LD 1.9) "
                "is not offered: delete several entities with a batch delete.",
            ),
        },
        one: {
            "get": operation(
                "retrieveEntity",
                "Retrieve Entity (§6.5.3.1)",
                merge(ENTITY_OK, problems(*READ_ERRORS, 501)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    TENANT,
                    LINK,
                    ATTRS,
                    *REPRESENTATION,
                    DATASET_ID,
                    JOIN,
                    JOIN_LEVEL,
                ],
            ),
            "delete": operation(
                "deleteEntity",
                "Delete Entity (§6.5.3.2)",
                merge(no_content("Deleted."), problems(400, 404)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT],
            ),
            "put": operation(
                "replaceEntity",
                "Replace Entity (§6.5.3.3)",
                merge(no_content("Replaced."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT, LINK],
                request_body=body(
                    ref("EntityFragment"), "The new entity (`type` required; `id` optional)."
                ),
            ),
            "patch": operation(
                "mergeEntity",
                "Merge Entity (§6.5.3.4)",
                merge(no_content("Merged."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT, LINK],
                request_body=body(
                    ref("EntityFragment"),
                    "Members to merge into the entity (`null` deletes).",
                    merge_patch=True,
                ),
            ),
        },
        attrs: {
            "post": operation(
                "appendAttrs",
                "Append Entity Attributes (§6.6.3.1)",
                merge(no_content("Appended."), UPDATE_RESULT, problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    TENANT,
                    LINK,
                    list_param("options", "noOverwrite: keep attributes that exist."),
                ],
                request_body=body(ref("EntityFragment"), "The attributes to append."),
            ),
            "patch": operation(
                "updateAttrs",
                "Update Entity Attributes (§6.6.3.2)",
                merge(no_content("Updated."), UPDATE_RESULT, problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, TENANT, LINK],
                request_body=body(
                    ref("EntityFragment"), "The attributes to update.", merge_patch=True
                ),
            ),
        },
        f"{attrs}/{{attr_id}}": {
            "patch": operation(
                "partialAttrUpdate",
                "Partial Attribute Update (§6.7.3.1)",
                merge(no_content("Updated."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, ATTR_ID, TENANT, LINK],
                request_body=body(
                    ref("AttributeFragment"), "The members to change.", merge_patch=True
                ),
            ),
            "put": operation(
                "replaceAttr",
                "Replace Attribute (§6.7.3.3)",
                merge(no_content("Replaced."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[ENTITY_ID, ATTR_ID, TENANT, LINK],
                request_body=body(ref("AttributeFragment"), "The new attribute."),
            ),
            "delete": operation(
                "deleteAttr",
                "Delete Attribute (§6.7.3.2)",
                merge(no_content("Deleted."), problems(400, 404, 503)),
                tag=TAG,
                parameters=[
                    ENTITY_ID,
                    ATTR_ID,
                    TENANT,
                    LINK,
                    query("datasetId", "Delete the instance with this datasetId (a URI)."),
                    boolean_query("deleteAll", "true: delete every instance."),
                ],
            ),
        },
    }


def batch_paths() -> dict[str, Any]:
    ops = f"{PREFIX}/entityOperations"
    upsert_options = list_param(
        "options", "replace (default: the entity as sent replaces the stored one) or update."
    )
    return {
        f"{ops}/create": {
            "post": operation(
                "batchEntityCreation",
                "Batch Entity Creation (§6.14.3.1)",
                merge(
                    ok(ref("EntityIdList"), "All created.", status=201, ld=False),
                    BATCH_RESULT,
                    problems(400, 413, 415, 503),
                ),
                tag=BATCH,
                parameters=[TENANT, LINK],
                request_body=body(ENTITY_ARRAY, "The entities to create."),
            )
        },
        f"{ops}/upsert": {
            "post": operation(
                "batchEntityUpsert",
                "Batch Entity Upsert (§6.15.3.1)",
                merge(
                    ok(ref("EntityIdList"), "Some entities were created.", status=201, ld=False),
                    no_content("All existed and were updated."),
                    BATCH_RESULT,
                    problems(400, 413, 415, 503),
                ),
                tag=BATCH,
                parameters=[TENANT, LINK, upsert_options],
                request_body=body(ENTITY_ARRAY, "The entities to create or update."),
            )
        },
        f"{ops}/update": {
            "post": operation(
                "batchEntityUpdate",
                "Batch Entity Update (§6.16.3.1)",
                merge(no_content("All updated."), BATCH_RESULT, problems(*WRITE_ERRORS)),
                tag=BATCH,
                parameters=[
                    TENANT,
                    LINK,
                    list_param("options", "noOverwrite: keep existing ones."),
                ],
                request_body=body(
                    {"type": "array", "items": ref("EntityFragment")},
                    "The entities (id and attributes) to update.",
                ),
            )
        },
        f"{ops}/delete": {
            "post": operation(
                "batchEntityDelete",
                "Batch Entity Delete (§6.17.3.1)",
                merge(no_content("All deleted."), BATCH_RESULT, problems(*WRITE_ERRORS)),
                tag=BATCH,
                parameters=[TENANT, LINK],
                request_body=body({"type": "array", "items": STRING}, "The entity ids."),
            )
        },
        f"{ops}/merge": {
            "post": operation(
                "batchEntityMerge",
                "Batch Entity Merge (§6.31.3.1)",
                merge(no_content("All merged."), BATCH_RESULT, problems(*WRITE_ERRORS)),
                tag=BATCH,
                parameters=[TENANT, LINK],
                request_body=body(
                    {"type": "array", "items": ref("EntityFragment")},
                    "The entities (id and members) to merge.",
                    merge_patch=True,
                ),
            )
        },
        f"{ops}/query": {
            "post": operation(
                "queryBatch",
                "Query Entities via POST (§6.23.3.1)",
                merge(ENTITIES_OK, problems(*READ_ERRORS, 403, 413, 415, 501)),
                tag=BATCH,
                parameters=[TENANT, LINK, LIMIT, OFFSET, COUNT, *REPRESENTATION, JOIN, JOIN_LEVEL],
                request_body=body(ref("Query"), "What to select."),
            )
        },
    }


def discovery_paths() -> dict[str, Any]:
    common = [TENANT, LINK]
    return {
        f"{PREFIX}/types": {
            "get": operation(
                "retrieveEntityTypes",
                "Retrieve Available Entity Types (§6.25.3.1)",
                merge(
                    ok(
                        {
                            "anyOf": [
                                ref("EntityTypeList"),
                                {"type": "array", "items": ref("EntityType")},
                            ]
                        },
                        "An EntityTypeList; with details=true an array of EntityType.",
                        headers=LINK_HEADER,
                    ),
                    problems(*READ_ERRORS),
                ),
                tag=DISCOVERY,
                parameters=[*common, DETAILS],
            )
        },
        f"{PREFIX}/types/{{type}}": {
            "get": operation(
                "retrieveEntityTypeInfo",
                "Retrieve Entity Type Information (§6.26.3.1)",
                merge(
                    ok(ref("EntityTypeInfo"), "The type.", headers=LINK_HEADER),
                    problems(*READ_ERRORS),
                ),
                tag=DISCOVERY,
                parameters=[path_param("type", "The type name (or IRI)."), *common],
            )
        },
        f"{PREFIX}/attributes": {
            "get": operation(
                "retrieveAttrTypes",
                "Retrieve Available Attributes (§6.27.3.1)",
                merge(
                    ok(
                        {
                            "anyOf": [
                                ref("AttributeList"),
                                {"type": "array", "items": ref("Attribute")},
                            ]
                        },
                        "An AttributeList; with details=true an array of Attribute.",
                        headers=LINK_HEADER,
                    ),
                    problems(*READ_ERRORS),
                ),
                tag=DISCOVERY,
                parameters=[*common, DETAILS],
            )
        },
        f"{PREFIX}/attributes/{{attr}}": {
            "get": operation(
                "retrieveAttrTypeInfo",
                "Retrieve Attribute Information (§6.28.3.1)",
                merge(
                    ok(ref("Attribute"), "The attribute.", headers=LINK_HEADER),
                    problems(*READ_ERRORS),
                ),
                tag=DISCOVERY,
                parameters=[path_param("attr", "The attribute name (or IRI)."), *common],
            )
        },
    }


def context_paths() -> dict[str, Any]:
    context_id = path_param(
        "context_id",
        "The @context's localId, or (percent-encoded) a Cached one's original URL or a core"
        " @context URL.",
    )
    return {
        f"{PREFIX}/jsonldContexts": {
            "get": operation(
                "listContexts",
                "List @contexts (§6.29.3.1)",
                merge(
                    ok(
                        {
                            "anyOf": [
                                {"type": "array", "items": STRING},
                                {"type": "array", "items": ref("ContextInfo")},
                            ]
                        },
                        "Their URLs; with details=true their metadata.",
                        ld=False,
                    ),
                    problems(400),
                ),
                tag=CONTEXTS,
                parameters=[
                    DETAILS,
                    query(
                        "kind",
                        "Only @contexts of this kind.",
                        {"type": "string", "enum": ["Hosted", "Cached", "ImplicitlyCreated"]},
                    ),
                ],
            ),
            "post": operation(
                "addContext",
                "Add @context (§6.29.3.2)",
                merge(
                    created("Stored as Hosted; Location is its path, /jsonldContexts/{localId}."),
                    problems(400, 413, 415, 503),
                ),
                tag=CONTEXTS,
                request_body=body(ref("ContextDocument"), "A JSON-LD context document."),
            ),
        },
        f"{PREFIX}/jsonldContexts/{{context_id}}": {
            "get": operation(
                "serveContext",
                "Serve @context (§6.30.3.1)",
                merge(
                    {
                        "200": {
                            "description": "The context document; with details=true its metadata.",
                            "content": {
                                kind: {
                                    "schema": {
                                        "anyOf": [ref("ContextDocument"), ref("ContextInfo")]
                                    }
                                }
                                for kind in ("application/json", "application/ld+json")
                            },
                        }
                    },
                    problems(400, 404, 422),
                ),
                tag=CONTEXTS,
                parameters=[context_id, DETAILS],
            ),
            "delete": operation(
                "deleteContext",
                "Delete and Reload @context (§6.30.3.2)",
                merge(
                    no_content("Deleted (or reloaded)."),
                    problems(400, 404, 503),
                ),
                tag=CONTEXTS,
                parameters=[context_id, boolean_query("reload", "true: download it again.")],
            ),
        },
    }


def hub_part() -> ApiPart:
    return ApiPart(
        paths={**entities_paths(), **batch_paths(), **discovery_paths(), **context_paths()},
        tags={
            TAG: "NGSI-LD entities and their attributes (ETSI GS CIM 009 v1.8 §6.4-§6.7).",
            BATCH: "Operations on many entities at once (§6.14-§6.17, §6.23, §6.31).",
            DISCOVERY: "The entity types and attributes in use (§6.25-§6.28).",
            CONTEXTS: "The @contexts the broker holds (§6.29, §6.30).",
        },
    )
