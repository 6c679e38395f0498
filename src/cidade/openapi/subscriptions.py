"""Subscriptions (hub/subscriptions_api.py, SubscriptionApi.routes())."""

from __future__ import annotations

from typing import Any

from cidade.hub.api import PREFIX
from cidade.openapi.build import (
    LINK,
    LINK_HEADER,
    RESULTS_COUNT,
    TENANT,
    WRITE_ERRORS,
    ApiPart,
    body,
    created,
    merge,
    no_content,
    ok,
    operation,
    path_param,
    problems,
)
from cidade.openapi.hub import COUNT, LIMIT, OFFSET, list_param
from cidade.openapi.schemas import DATE_TIME, STRING, STRINGS, URI, Schema, ref

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


def subscription_paths() -> dict[str, Any]:
    base = f"{PREFIX}/subscriptions"
    return {
        base: {
            "post": operation(
                "createSubscription",
                "Create Subscription (§6.10.3.1)",
                merge(created("Created."), problems(400, 409, 413, 415, 503)),
                tag=TAG,
                parameters=[TENANT, LINK],
                request_body=body(ref("SubscriptionInput"), "The subscription."),
            ),
            "get": operation(
                "querySubscription",
                "Query Subscriptions (§6.10.3.2)",
                merge(
                    ok(
                        {"type": "array", "items": ref("Subscription")},
                        "The tenant's subscriptions.",
                        headers={**LINK_HEADER, **RESULTS_COUNT},
                    ),
                    problems(400, 403, 404, 406, 503),
                ),
                tag=TAG,
                parameters=[TENANT, LINK, LIMIT, OFFSET, COUNT, SYS_ATTRS],
            ),
        },
        f"{base}/{{subscription_id}}": {
            "get": operation(
                "retrieveSubscription",
                "Retrieve Subscription (§6.11.3.1)",
                merge(
                    ok(ref("Subscription"), "The subscription.", headers=LINK_HEADER),
                    problems(400, 404, 406, 503),
                ),
                tag=TAG,
                parameters=[SUBSCRIPTION_ID, TENANT, LINK, SYS_ATTRS],
            ),
            "patch": operation(
                "updateSubscription",
                "Update Subscription (§6.11.3.2)",
                merge(no_content("Updated."), problems(*WRITE_ERRORS)),
                tag=TAG,
                parameters=[SUBSCRIPTION_ID, TENANT, LINK],
                request_body=body(
                    ref("SubscriptionFragment"), "The members to change.", merge_patch=True
                ),
            ),
            "delete": operation(
                "deleteSubscription",
                "Delete Subscription (§6.11.3.3)",
                merge(no_content("Deleted."), problems(400, 404)),
                tag=TAG,
                parameters=[SUBSCRIPTION_ID, TENANT],
            ),
        },
    }


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
