"""Subscriptions (hub/subscriptions_api.py, SubscriptionApi.routes())."""

from __future__ import annotations

from typing import Any

from cidade.hub.api import PREFIX
from cidade.openapi.build import (
    ApiPart,
    Collection,
    collection_paths,
    path_param,
)
from cidade.openapi.hub import COUNT, LIMIT, OFFSET, list_param
from cidade.openapi.schemas import DATE_TIME, STRING, STRINGS, URI, Schema

TAG = "Subscriptions"

ENDPOINT: Schema = {
    "type": "object",
    "required": ["uri"],
    "properties": {
        "uri": {"type": "string", "description": "http(s)://... or mqtt(s)://.../topic"},
        "accept": {"enum": ["application/json", "application/ld+json", "application/geo+json"]},
        "receiverInfo": {"type": "array"},
        "notifierInfo": {"type": "array"},
        "timeout": {"type": "number"},
        "cooldown": {"type": "number"},
    },
}

SUBSCRIPTION_MEMBERS: dict[str, Schema] = {
    "id": {**URI, "description": "a URI; generated when absent"},
    "type": {"const": "Subscription"},
    "subscriptionName": STRING,
    "description": STRING,
    "entities": {"type": "array", "items": {"type": "object"}},
    "watchedAttributes": STRINGS,
    "notificationTrigger": STRINGS,
    "q": STRING,
    "geoQ": {"type": "object"},
    "timeInterval": {"type": "number"},
    "throttling": {"type": "number"},
    "expiresAt": DATE_TIME,
    "isActive": {"type": "boolean"},
    "jsonldContext": STRING,
    "datasetId": {
        **STRINGS,
        "description": "the instances notified, by datasetId (@none: default)",
    },
    "lang": STRING,
    "@context": {"description": "the @context of an application/ld+json body"},
}

SUBSCRIPTION_INPUT: Schema = {
    "type": "object",
    "description": "A subscription to create (§5.2.12); docs/api/subscriptions.md lists the "
    "members this broker supports.",
    "required": ["type", "notification"],
    "properties": {
        **SUBSCRIPTION_MEMBERS,
        "notification": {
            "type": "object",
            "required": ["endpoint"],
            "properties": {
                "attributes": STRINGS,
                "pick": STRINGS,
                "omit": STRINGS,
                "format": {"enum": ["normalized", "keyValues", "simplified", "concise"]},
                "sysAttrs": {"type": "boolean"},
                "showChanges": {"type": "boolean"},
                "join": {"enum": ["flat", "inline", "@none"]},
                "joinLevel": {"type": "integer", "minimum": 1, "maximum": 10},
                "endpoint": ENDPOINT,
            },
        },
    },
}

SUBSCRIPTION_FRAGMENT: Schema = {
    "type": "object",
    "description": "Members to change (each replaces the stored member whole; `null` removes it).",
    "properties": {k: v for k, v in SUBSCRIPTION_MEMBERS.items() if k not in ("id", "type")},
}

SUBSCRIPTION: Schema = {
    "type": "object",
    "description": "A subscription as stored, with its `status` and, inside `notification`, "
    "the delivery status (timesSent, timesFailed, lastNotification, lastSuccess, lastFailure, "
    "status).",
    "required": ["id", "type", "notification", "status"],
    "properties": {
        **SUBSCRIPTION_MEMBERS,
        "id": STRING,
        "status": {"enum": ["active", "paused", "expired"]},
        "notification": {
            "type": "object",
            "required": ["endpoint"],
            "properties": {
                "endpoint": {"type": "object", "required": ["uri"]},
                "timesSent": {"type": "integer", "minimum": 0},
                "timesFailed": {"type": "integer", "minimum": 0},
                "lastNotification": DATE_TIME,
                "lastSuccess": DATE_TIME,
                "lastFailure": DATE_TIME,
                "status": {"enum": ["ok", "failed"]},
            },
        },
        "createdAt": DATE_TIME,
        "modifiedAt": DATE_TIME,
    },
}

SUBSCRIPTION_ID = path_param(
    "subscription_id",
    "The subscription id (a URI).",
    example="urn:ngsi-ld:Subscription:openapi-1",
    schema=URI,
)
SYS_ATTRS = list_param("options", "sysAttrs: add createdAt and modifiedAt.")
# The parameters of a query of subscriptions.
PAGE = (LIMIT, OFFSET, COUNT, SYS_ATTRS)


def subscription_paths() -> dict[str, Any]:
    return collection_paths(
        Collection(
            path=f"{PREFIX}/subscriptions",
            item=SUBSCRIPTION_ID,
            tag=TAG,
            schema="Subscription",
            noun="subscription",
            listed="The tenant's subscriptions.",
            operations=(
                ("createSubscription", "Create Subscription (§6.10.3.1)"),
                ("querySubscription", "Query Subscriptions (§6.10.3.2)"),
                ("retrieveSubscription", "Retrieve Subscription (§6.11.3.1)"),
                ("updateSubscription", "Update Subscription (§6.11.3.2)"),
                ("deleteSubscription", "Delete Subscription (§6.11.3.3)"),
            ),
            filters=PAGE,
            options=(SYS_ATTRS,),
        )
    )


def subscription_part() -> ApiPart:
    return ApiPart(
        paths=subscription_paths(),
        tags={TAG: "Subscriptions and their notification status (§6.10, §6.11)."},
        schemas={
            "Subscription": SUBSCRIPTION,
            "SubscriptionInput": SUBSCRIPTION_INPUT,
            "SubscriptionFragment": SUBSCRIPTION_FRAGMENT,
        },
    )
