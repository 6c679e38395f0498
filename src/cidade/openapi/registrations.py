"""Context source registrations and their subscriptions (hub/registrations_api.py,
RegistrationApi.routes(); hub/subscriptions_api.py with the csource kind)."""

from __future__ import annotations

from typing import Any

from cidade.hub.api import PREFIX
from cidade.hub.registrations import MODES
from cidade.openapi.build import (
    ApiPart,
    Collection,
    collection_paths,
    path_param,
    query,
)
from cidade.openapi.hub import COUNT, LIMIT, OFFSET, list_param
from cidade.openapi.schemas import DATE_TIME, STRING, STRINGS, URI, Schema
from cidade.openapi.subscriptions import PAGE, SUBSCRIPTION_ID, SYS_ATTRS

TAG = "Context sources"

INTERVAL: Schema = {
    "type": "object",
    "required": ["startAt"],
    "properties": {"startAt": DATE_TIME, "endAt": DATE_TIME},
}
GEOMETRY: Schema = {"type": "object", "description": "a GeoJSON geometry"}

REGISTRATION_MEMBERS: dict[str, Schema] = {
    "id": {**URI, "description": "a URI; generated when absent"},
    "type": {"const": "ContextSourceRegistration"},
    "registrationName": STRING,
    "description": STRING,
    "information": {
        "type": "array",
        "minItems": 1,
        "description": "RegistrationInfo (§5.2.10): entities (EntityInfo: id or idPattern, "
        "type), propertyNames, relationshipNames",
        "items": {
            "type": "object",
            "properties": {
                "entities": {"type": "array", "items": {"type": "object"}},
                "propertyNames": STRINGS,
                "relationshipNames": STRINGS,
            },
        },
    },
    "tenant": STRING,
    "observationInterval": INTERVAL,
    "managementInterval": INTERVAL,
    "location": GEOMETRY,
    "observationSpace": GEOMETRY,
    "operationSpace": GEOMETRY,
    "expiresAt": DATE_TIME,
    "endpoint": {**URI, "description": "the context source's http(s) URL"},
    "contextSourceInfo": {"type": "array", "items": {"type": "object"}},
    "scope": {"description": "a scope or an array of scopes"},
    "mode": {"enum": list(MODES)},
    "operations": STRINGS,
    "refreshRate": STRING,
    "management": {"type": "object"},
    "@context": {"description": "the @context of an application/ld+json body"},
}

REGISTRATION_INPUT: Schema = {
    "type": "object",
    "description": "A context source registration to create (§5.2.9); any other member is a "
    "Context Source Property. docs/api/csource-registrations.md says what is checked.",
    "required": ["type", "information", "endpoint"],
    "properties": REGISTRATION_MEMBERS,
}

REGISTRATION_FRAGMENT: Schema = {
    "type": "object",
    "description": "Members to change (each replaces the stored member whole; `null` removes "
    "an optional one).",
    "properties": {k: v for k, v in REGISTRATION_MEMBERS.items() if k not in ("id", "type")},
}

REGISTRATION: Schema = {
    "type": "object",
    "description": "A context source registration as stored (names compacted with the "
    "request's @context), with createdAt and modifiedAt when options=sysAttrs.",
    "required": ["id", "type", "information", "endpoint", "mode", "operations"],
    "properties": {
        **REGISTRATION_MEMBERS,
        "id": STRING,
        "createdAt": DATE_TIME,
        "modifiedAt": DATE_TIME,
    },
}

REGISTRATION_ID = path_param(
    "registration_id",
    "The registration id (a URI).",
    example="urn:ngsi-ld:ContextSourceRegistration:openapi-1",
    schema=URI,
)

REGISTRATION_FILTERS = [
    list_param("id", "Entity ids (URIs) the registered information is about."),
    query("idPattern", "A regular expression of entity ids."),
    query("type", "A type expression: `A,B` or `A|B` (either), `A;B` (both), parentheses."),
    list_param("attrs", "Attribute names (property or relationship names)."),
    query("q", 'A query on the Context Source Properties, e.g. `region=="north"`.'),
    query("csf", "A context source filter: a query on the Context Source Properties."),
    query("georel", "A geo relation: near;maxDistance==M, within, contains, intersects, ..."),
    query("geometry", "The query geometry's type."),
    query("coordinates", "The query geometry's coordinates, as JSON (URL-encoded)."),
    query("geoproperty", "location (default), observationSpace or operationSpace."),
    query("timerel", "before, after or between", {"enum": ["before", "after", "between"]}),
    query("timeAt", "The time of the temporal query.", DATE_TIME),
    query("endTimeAt", "The end of a between temporal query.", DATE_TIME),
    query(
        "timeproperty",
        "observedAt (the observationInterval, default), createdAt or modifiedAt "
        "(the managementInterval)",
        {"enum": ["observedAt", "createdAt", "modifiedAt"]},
    ),
    LIMIT,
    OFFSET,
    COUNT,
    SYS_ATTRS,
]


def registration_paths() -> dict[str, Any]:
    return collection_paths(
        Collection(
            path=f"{PREFIX}/csourceRegistrations",
            item=REGISTRATION_ID,
            tag=TAG,
            schema="CSourceRegistration",
            noun="registration",
            listed="The registrations that match.",
            operations=(
                ("registerContextSource", "Register Context Source (§6.8.3.1)"),
                ("queryCSourceRegistrations", "Query Context Source Registrations (§6.8.3.2)"),
                ("retrieveCSourceRegistration", "Retrieve Context Source Registration (§6.9.3.1)"),
                ("updateCSourceRegistration", "Update Context Source Registration (§6.9.3.2)"),
                ("deleteCSourceRegistration", "Delete Context Source Registration (§6.9.3.3)"),
            ),
            filters=tuple(REGISTRATION_FILTERS),
            options=(SYS_ATTRS,),
        )
    )


def csource_subscription_paths() -> dict[str, Any]:
    what = "Context Source Registration Subscription"
    return collection_paths(
        Collection(
            path=f"{PREFIX}/csourceSubscriptions",
            item=SUBSCRIPTION_ID,
            tag=TAG,
            schema="Subscription",
            noun="subscription",
            listed="The tenant's subscriptions to registrations.",
            operations=(
                ("createCSourceSubscription", f"Create {what} (§6.12.3.1)"),
                ("queryCSourceSubscriptions", f"Query {what}s (§6.12.3.2)"),
                ("retrieveCSourceSubscription", f"Retrieve {what} (§6.13.3.1)"),
                ("updateCSourceSubscription", f"Update {what} (§6.13.3.2)"),
                ("deleteCSourceSubscription", f"Delete {what} (§6.13.3.3)"),
            ),
            filters=PAGE,
            options=(SYS_ATTRS,),
        )
    )


def registration_part() -> ApiPart:
    return ApiPart(
        paths={**registration_paths(), **csource_subscription_paths()},
        tags={
            TAG: "Context source registrations (§6.8, §6.9) and subscriptions to them "
            "(§6.12, §6.13); requests are not forwarded to context sources yet."
        },
        schemas={
            "CSourceRegistration": REGISTRATION,
            "CSourceRegistrationInput": REGISTRATION_INPUT,
            "CSourceRegistrationFragment": REGISTRATION_FRAGMENT,
        },
    )
