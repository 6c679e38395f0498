"""Component schemas shared by the API areas: the shapes requests and responses take.

Every schema is what the code really sends or accepts, no more: a response schema that the hub can
break fails the schemathesis run (tests/test_schemathesis.py). NGSI-LD payloads are open-ended
(any attribute name, any value), so entity-like schemas fix their top-level shape and the members
the hub always writes, and leave attributes open.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string"}
# A URI as the hub checks one (hub/model.py is_uri): a scheme, a colon, no spaces or <>"{}|\^`.
URI = {"type": "string", "pattern": '^[A-Za-z][A-Za-z0-9+.\\-]*:[^\\s<>"{}|\\\\^`]*$'}
STRINGS = {"type": "array", "items": STRING}
# A name (entity type, attribute) as the hub checks one (hub/model.py check_name).
NAME = {"type": "string", "pattern": "^[^\\s<>\"'=;()\\[\\]{}\\\\|^`]+$"}
NAMES = {"anyOf": [NAME, {"type": "array", "items": NAME, "minItems": 1}]}
STRING_OR_STRINGS = {"anyOf": [STRING, STRINGS]}
DATE_TIME = {"type": "string", "description": "ISO 8601 UTC date-time, e.g. 2026-01-01T10:00:00Z"}

LD_CONTEXT: Schema = {
    "description": "A JSON-LD @context: a URL, an inline context object, or an array of both.",
    "anyOf": [STRING, {"type": "object"}, {"type": "array"}],
}

PROBLEM_DETAILS: Schema = {
    "type": "object",
    "description": "An error (RFC 7807, NGSI-LD §5.5.2), always sent as application/json. `type` is "
    "an NGSI-LD error type URI, e.g. https://uri.etsi.org/ngsi-ld/errors/BadRequestData.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "pattern": "^https://uri\\.etsi\\.org/ngsi-ld/errors/"},
        "title": STRING,
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": STRING,
    },
}

# -- entities -----------------------------------------------------------------------------------

ENTITY: Schema = {
    "type": "object",
    "description": "An NGSI-LD entity in the representation asked for (normalized, concise or "
    "keyValues). `id` and `type` are there unless `pick`/`omit` left them out; every other member "
    "is an attribute: an object (a Property, Relationship, GeoProperty, ...) or an array of them "
    "(several datasetIds) in the normalized form, the bare value in keyValues (several datasetIds: "
    '`{"dataset": {datasetId or "@none": value}}`). JSON-LD responses add `@context`.',
    "properties": {
        "id": {"type": "string", "description": "the entity id, a URI"},
        "type": {**STRING_OR_STRINGS, "description": "entity type name(s)"},
        "scope": STRING_OR_STRINGS,
        "createdAt": DATE_TIME,
        "modifiedAt": DATE_TIME,
        "@context": LD_CONTEXT,
    },
}

ENTITY_INPUT: Schema = {
    "type": "object",
    "description": "An entity to create or to replace another with: `id` (a URI) and `type` are "
    "required; every other member is an attribute. With Content-Type application/ld+json the "
    "body carries its `@context`; with application/json the @context comes from the Link header.",
    "required": ["id", "type"],
    "properties": {
        "id": {**URI, "description": "the entity id, a URI"},
        "type": NAMES,
        "scope": STRING_OR_STRINGS,
        "@context": LD_CONTEXT,
    },
}

ENTITY_FRAGMENT: Schema = {
    "type": "object",
    "description": "Attributes to apply to an entity (each member an attribute; `id`, `type`, "
    "`scope` and `@context` are allowed as in a full entity).",
}

ATTRIBUTE_FRAGMENT: Schema = {
    "type": "object",
    "description": "One attribute instance (Property, Relationship, GeoProperty, LanguageProperty, "
    "...) or the members of one to change.",
}

GEOJSON_FEATURE: Schema = {
    "type": "object",
    "description": "An entity as a GeoJSON Feature (§4.5.16): `geometry` is the value of the "
    "GeoProperty chosen by `geometryProperty` (null when the entity has none).",
    "required": ["id", "type", "geometry", "properties"],
    "properties": {
        "id": STRING,
        "type": {"const": "Feature"},
        "geometry": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "properties": {"type": "object"},
        "@context": LD_CONTEXT,
    },
}

GEOJSON_COLLECTION: Schema = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": ref("Feature")},
        "@context": LD_CONTEXT,
    },
}

UPDATE_RESULT: Schema = {
    "type": "object",
    "description": "§5.2.18: which attributes were changed and which were not, and why.",
    "required": ["updated", "notUpdated"],
    "properties": {
        "updated": STRINGS,
        "notUpdated": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["attributeName", "reason"],
                "properties": {"attributeName": STRING, "reason": STRING},
            },
        },
    },
}

BATCH_RESULT: Schema = {
    "type": "object",
    "description": "§5.2.16: the entities a batch operation handled and those it did not.",
    "required": ["success", "errors"],
    "properties": {
        "success": {"type": "array", "items": STRING, "description": "entity ids"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["entityId", "error"],
                "properties": {
                    "entityId": {
                        "description": "the id of the entity as sent (anything, when the item "
                        "was not an entity at all)",
                    },
                    "error": ref("ProblemDetails"),
                },
            },
        },
    },
}

ENTITY_ID_LIST: Schema = {
    "type": "array",
    "items": STRING,
    "description": "the ids of the entities created",
}

QUERY: Schema = {
    "type": "object",
    "description": "§5.2.23 Query: what POST /entityOperations/query selects.",
    "required": ["type"],
    "properties": {
        "type": {"const": "Query"},
        "entities": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"id": STRING, "idPattern": STRING, "type": STRING},
            },
        },
        "attrs": STRINGS,
        "q": STRING,
        "geoQ": {
            "type": "object",
            "properties": {
                "georel": STRING,
                "geometry": STRING,
                "coordinates": {"anyOf": [STRING, {"type": "array"}]},
                "geoproperty": STRING,
            },
        },
        "ordering": {
            "type": "object",
            "description": "§5.2.43 OrderingParams: orderBy and collation as the query "
            "parameters (§4.23).",
            "required": ["orderBy"],
            "properties": {
                "orderBy": {"type": "array", "items": STRING, "minItems": 1},
                "collation": STRING,
            },
        },
        "@context": LD_CONTEXT,
    },
}

# -- discovery ----------------------------------------------------------------------------------

ENTITY_TYPE_LIST: Schema = {
    "type": "object",
    "required": ["id", "type", "typeList"],
    "properties": {
        "id": STRING,
        "type": {"const": "EntityTypeList"},
        "typeList": STRINGS,
        "@context": LD_CONTEXT,
    },
}

ENTITY_TYPE: Schema = {
    "type": "object",
    "required": ["id", "type", "typeName", "attributeNames"],
    "properties": {
        "id": STRING,
        "type": {"const": "EntityType"},
        "typeName": STRING,
        "attributeNames": STRINGS,
        "@context": LD_CONTEXT,
    },
}

ATTRIBUTE_DETAILS = {
    "type": "object",
    "required": ["id", "type", "attributeName", "attributeTypes"],
    "properties": {
        "id": STRING,
        "type": {"const": "Attribute"},
        "attributeName": STRING,
        "attributeTypes": STRINGS,
    },
}

ENTITY_TYPE_INFO: Schema = {
    "type": "object",
    "required": ["id", "type", "typeName", "entityCount", "attributeDetails"],
    "properties": {
        "id": STRING,
        "type": {"const": "EntityTypeInfo"},
        "typeName": STRING,
        "entityCount": {"type": "integer", "minimum": 0},
        "attributeDetails": {"type": "array", "items": ATTRIBUTE_DETAILS},
        "@context": LD_CONTEXT,
    },
}

ATTRIBUTE_LIST: Schema = {
    "type": "object",
    "required": ["id", "type", "attributeList"],
    "properties": {
        "id": STRING,
        "type": {"const": "AttributeList"},
        "attributeList": STRINGS,
        "@context": LD_CONTEXT,
    },
}

ATTRIBUTE: Schema = {
    "type": "object",
    # attributeCount and attributeTypes describe one attribute (§5.7.10), not the items of the
    # detailed list (§5.7.9).
    "required": ["id", "type", "attributeName", "typeNames"],
    "properties": {
        "id": STRING,
        "type": {"const": "Attribute"},
        "attributeName": STRING,
        "attributeCount": {"type": "integer", "minimum": 0},
        "attributeTypes": STRINGS,
        "typeNames": STRINGS,
        "@context": LD_CONTEXT,
    },
}

# -- @context management ------------------------------------------------------------------------

CONTEXT_INFO: Schema = {
    "type": "object",
    "description": "§5.13.3: metadata of a stored @context.",
    "required": ["URL", "localId", "kind", "createdAt", "numberOfHits"],
    "properties": {
        "URL": STRING,
        "localId": STRING,
        "kind": {"enum": ["Hosted", "Cached", "ImplicitlyCreated"]},
        "createdAt": DATE_TIME,
        "lastUsage": DATE_TIME,
        "numberOfHits": {"type": "integer", "minimum": 0},
        "extraInfo": {"type": "object"},
    },
}

CONTEXT_DOCUMENT: Schema = {
    "type": "object",
    "description": "A JSON-LD context document: its `@context` member.",
    "required": ["@context"],
    "properties": {"@context": LD_CONTEXT},
}

SCHEMAS: dict[str, Schema] = {
    "ProblemDetails": PROBLEM_DETAILS,
    "LdContext": LD_CONTEXT,
    "Entity": ENTITY,
    "EntityInput": ENTITY_INPUT,
    "EntityFragment": ENTITY_FRAGMENT,
    "AttributeFragment": ATTRIBUTE_FRAGMENT,
    "Feature": GEOJSON_FEATURE,
    "FeatureCollection": GEOJSON_COLLECTION,
    "UpdateResult": UPDATE_RESULT,
    "BatchOperationResult": BATCH_RESULT,
    "EntityIdList": ENTITY_ID_LIST,
    "Query": QUERY,
    "EntityTypeList": ENTITY_TYPE_LIST,
    "EntityType": ENTITY_TYPE,
    "EntityTypeInfo": ENTITY_TYPE_INFO,
    "AttributeList": ATTRIBUTE_LIST,
    "Attribute": ATTRIBUTE,
    "ContextInfo": CONTEXT_INFO,
    "ContextDocument": CONTEXT_DOCUMENT,
}
