"""The IoT Agent provisioning API (devices/api.py, docs/devices.md): /iot/services, /iot/devices.

Its errors are the IoT agent's ``{"name", "message"}`` (IotError), which its clients expect;
a 400 may also be the gate's ProblemDetails (a malformed tenant header), and 401, 403 and 429
are always the gate's.
"""

from __future__ import annotations

from typing import Any

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
from cidade.openapi.schemas import STRING, Schema, ref

TAG = "Devices"
JSON = "application/json"

# The same characters devices/provisioning.py refuses.
KEY: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": r"^[^\s/#+?%\x00-\x1f\x7f]+$",
}
RESOURCE: Schema = {
    "type": "string",
    "maxLength": 256,
    "pattern": r"^/[^\s#+?%\x00-\x1f\x7f]*$",
    "default": "/iot/json",
}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 256}
ANY: Schema = {}
ATTRIBUTE_PROPERTIES: dict[str, Schema] = {
    "object_id": NAME,
    "name": NAME,
    "type": NAME,
    "expression": STRING,
    "skipValue": ANY,
    "entity_name": STRING,
    "entity_type": NAME,
    "reverse": ANY,
    "metadata": {"type": "object"},
    "mqtt": ANY,
    "payloadType": ANY,
    "contentType": ANY,
}
ATTRIBUTE: Schema = {
    "type": "object",
    "description": "A measure of the device (`object_id`, default `name`) as an attribute.",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": ATTRIBUTE_PROPERTIES,
}
COMMAND: Schema = {
    "type": "object",
    "required": ["name", "type"],
    "additionalProperties": False,
    "properties": {**ATTRIBUTE_PROPERTIES, "value": ANY},
}
STATIC_ATTRIBUTE: Schema = {
    "type": "object",
    "required": ["name", "type", "value"],
    "additionalProperties": False,
    "properties": {"name": NAME, "type": NAME, "value": ANY, "metadata": {"type": "object"}},
}


def _list(item: Schema) -> Schema:
    return {"type": "array", "maxItems": 1000, "items": item}


COMMON: dict[str, Schema] = {
    "entity_type": NAME,
    "attributes": _list(ref("IotAttribute")),
    "commands": _list(ref("IotCommand")),
    "static_attributes": _list(ref("IotStaticAttribute")),
    "explicitAttrs": {"type": "boolean"},
    "timezone": {"type": "string", "description": "An IANA time zone, e.g. Europe/Lisbon."},
}
IGNORED: dict[str, Schema] = {
    "lazy": {**_list(ref("IotAttribute")), "description": "Accepted, not kept."},
    "cbroker": {"type": "string", "description": "Accepted, not kept: Cidade is the broker."},
    "token": {"type": "string", "description": "Accepted, not kept."},
    "timestamp": {"type": "boolean", "description": "Accepted, not kept."},
}
SERVICE_PROPERTIES: dict[str, Schema] = {
    "apikey": KEY,
    "resource": RESOURCE,
    **COMMON,
    "autoprovision": {"type": "boolean", "default": True},
}
SERVICE: Schema = {
    "type": "object",
    "description": "A service group. Members of the IoT agent's data model that Cidade does "
    "not use are accepted and not kept; members the agent does not know are ignored.",
    "required": ["apikey"],
    "properties": {**SERVICE_PROPERTIES, **IGNORED},
}
SERVICE_CHANGE: Schema = {
    "type": "object",
    "description": "The members to change; apikey and resource come from the query.",
    "properties": {**SERVICE_PROPERTIES, **IGNORED, "apikey": STRING, "resource": STRING},
}
SERVICE_OUT: Schema = {
    "type": "object",
    "required": ["apikey", "resource", "autoprovision", "service", "subservice"],
    "properties": {
        **SERVICE_PROPERTIES,
        "service": {"type": "string", "description": "The tenant."},
        "subservice": {
            "type": "string",
            "description": "The Fiware-ServicePath it was saved with.",
        },
    },
}
DEVICE_PROPERTIES: dict[str, Schema] = {
    "device_id": KEY,
    "entity_name": {
        "type": "string",
        "description": "A URI; default urn:ngsi-ld:<entity_type>:<device_id>.",
    },
    "apikey": KEY,
    **COMMON,
    "protocol": NAME,
    "transport": {"enum": ["MQTT", "HTTP"]},
    "endpoint": {"type": "string", "description": "A URL."},
}
DEVICE: Schema = {
    "type": "object",
    "required": ["device_id"],
    "properties": {**DEVICE_PROPERTIES, **IGNORED},
}
DEVICE_CHANGE: Schema = {
    "type": "object",
    "description": "The members to change; the device_id cannot change.",
    "not": {"required": ["device_id"]},
    "properties": {k: v for k, v in {**DEVICE_PROPERTIES, **IGNORED}.items() if k != "device_id"},
}
DEVICE_OUT: Schema = {
    "type": "object",
    "required": ["device_id", "entity_name", "entity_type", "service", "service_path"],
    "properties": {
        **DEVICE_PROPERTIES,
        "service": {"type": "string", "description": "The tenant."},
        "service_path": STRING,
    },
}
IOT_ERROR: Schema = {
    "type": "object",
    "description": "An error in the IoT agent's format.",
    "required": ["name", "message"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "examples": ["WRONG_SYNTAX", "DUPLICATE_GROUP"]},
        "message": STRING,
    },
}

HEADERS = [
    {
        "name": "Fiware-Service",
        "in": "header",
        "required": False,
        "description": "The tenant, as FIWARE tools name it (the same as NGSILD-Tenant).",
        "schema": STRING,
    },
    {
        "name": "Fiware-ServicePath",
        "in": "header",
        "required": False,
        "description": "Kept with the record (default /); no other meaning here.",
        "schema": {"type": "string", "pattern": r"^(/[^\s\x00-\x1f\x7f]{0,255})?$"},
    },
    TENANT,
]
NUMBER = {"type": "string", "pattern": "^[0-9]{1,9}$"}
PAGE = [
    query("limit", "at most this many (at most the page size limit)", NUMBER),
    query("offset", "skip this many", NUMBER),
]
GROUP_KEY = [
    query("apikey", "the group's apikey", KEY, required=True),
    query("resource", "the group's resource", RESOURCE, required=True),
]
DEVICE_ID = path_param("device_id", "the device's id", "lamp001")


def _error(description: str, gate: bool = False) -> dict[str, Any]:
    schema = {"anyOf": [ref("IotError"), ref("ProblemDetails")]} if gate else ref("IotError")
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "Invalid (WRONG_SYNTAX, MISSING_ATTRIBUTES, MISSING_HEADERS, BAD_REQUEST, "
        "WRONG_SERVICE_PATH); or the gate's ProblemDetails for a malformed tenant header.",
        404: "No such group (DEVICE_GROUP_NOT_FOUND) or device (DEVICE_NOT_FOUND) here.",
        409: "The group (DUPLICATE_GROUP) or device (DUPLICATE_DEVICE_ID) exists: nothing "
        "of the request was written.",
        413: "The body is too large (PAYLOAD_TOO_LARGE).",
        415: "The body is not application/json (UNSUPPORTED_CONTENT_TYPE).",
    }
    return {str(c): _error(texts[c], gate=c == 400) for c in codes}


CREATED = json_ok({"type": "object", "maxProperties": 0}, "Created: every one of them.", 201)


def _many(key: str, item: Schema) -> Schema:
    return {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: {"type": "array", "minItems": 1, "maxItems": 1000, "items": item}},
    }


def devices_paths() -> dict[str, Any]:
    write = (400, 413, 415)
    return {
        "/iot/services": {
            "get": operation(
                "listServiceGroups",
                "The tenant's service groups",
                merge(
                    json_ok(
                        {
                            "type": "object",
                            "required": ["count", "services"],
                            "properties": {
                                "count": {"type": "integer", "description": "All that match."},
                                "services": {"type": "array", "items": ref("IotServiceOut")},
                            },
                        },
                        "The groups, by apikey and resource.",
                    ),
                    _errors(400),
                ),
                tag=TAG,
                parameters=[
                    *HEADERS,
                    query("apikey", "only the groups of this apikey"),
                    query("resource", "only the groups of this resource"),
                    *PAGE,
                ],
            ),
            "post": operation(
                "createServiceGroups",
                "Create service groups: all or none",
                merge(CREATED, _errors(*write, 409)),
                tag=TAG,
                parameters=HEADERS,
                request_body=json_body(_many("services", ref("IotService")), "The groups."),
            ),
            "put": operation(
                "updateServiceGroup",
                "Change members of a service group",
                merge(no_content(), _errors(*write, 404)),
                tag=TAG,
                parameters=[*HEADERS, *GROUP_KEY],
                request_body=json_body(ref("IotServiceChange"), "The members to change."),
            ),
            "delete": operation(
                "deleteServiceGroup",
                "Delete a service group (its devices stay)",
                merge(no_content(), _errors(400, 404)),
                tag=TAG,
                parameters=[*HEADERS, *GROUP_KEY],
            ),
        },
        "/iot/devices": {
            "get": operation(
                "listDevices",
                "The tenant's devices",
                merge(
                    json_ok(
                        {
                            "type": "object",
                            "required": ["count", "devices"],
                            "properties": {
                                "count": {"type": "integer", "description": "All of them."},
                                "devices": {"type": "array", "items": ref("IotDeviceOut")},
                            },
                        },
                        "A page of devices (20 unless `limit`), by device_id.",
                    ),
                    _errors(400),
                ),
                tag=TAG,
                parameters=[*HEADERS, *PAGE],
            ),
            "post": operation(
                "createDevices",
                "Provision devices: all or none",
                merge(CREATED, _errors(*write, 409)),
                tag=TAG,
                parameters=HEADERS,
                request_body=json_body(_many("devices", ref("IotDevice")), "The devices."),
            ),
        },
        "/iot/devices/{device_id}": {
            "get": operation(
                "getDevice",
                "One device",
                merge(json_ok(ref("IotDeviceOut"), "The device."), _errors(400, 404)),
                tag=TAG,
                parameters=[*HEADERS, DEVICE_ID],
            ),
            "put": operation(
                "updateDevice",
                "Change members of a device",
                merge(no_content(), _errors(*write, 404)),
                tag=TAG,
                parameters=[*HEADERS, DEVICE_ID],
                request_body=json_body(ref("IotDeviceChange"), "The members to change."),
            ),
            "delete": operation(
                "deleteDevice",
                "Delete a device",
                merge(no_content(), _errors(400, 404)),
                tag=TAG,
                parameters=[*HEADERS, DEVICE_ID],
            ),
        },
    }


def southbound_paths() -> dict[str, Any]:
    key = r"^[^\s/#+?%]+$"
    return {
        "/iot/json": {
            "post": operation(
                "sendMeasures",
                "A device's measures over HTTP (the IoT Agent for JSON's HTTP binding)",
                {
                    "200": {"description": "Written to the device's entity."},
                    "400": _error(
                        "The measures break a rule (BAD_REQUEST), k or i is missing "
                        "(MANDATORY_PARAMS_NOT_FOUND); or the gate's ProblemDetails.",
                        gate=True,
                    ),
                    "404": _error(
                        "No group has this apikey (DEVICE_GROUP_NOT_FOUND), or the device is "
                        "unknown and its group does not provision devices (DEVICE_NOT_FOUND)."
                    ),
                    "413": _error("The body is too large (PAYLOAD_TOO_LARGE)."),
                    "415": _error("The body is not application/json (UNSUPPORTED_CONTENT_TYPE)."),
                },
                tag=TAG,
                parameters=[
                    {
                        "name": "k",
                        "in": "query",
                        "required": True,
                        "description": "the service group's apikey",
                        "schema": {"type": "string", "pattern": key},
                    },
                    {
                        "name": "i",
                        "in": "query",
                        "required": True,
                        "description": "the device id",
                        "schema": {"type": "string", "pattern": key},
                    },
                    {
                        "name": "t",
                        "in": "query",
                        "required": False,
                        "description": "when the measures were taken (ISO 8601), as TimeInstant",
                        "schema": {"type": "string"},
                    },
                ],
                request_body=json_body(
                    {
                        "type": "object",
                        "description": "measures by object_id; TimeInstant dates them",
                    },
                    "The measures.",
                ),
            )
        }
    }


def devices_part() -> ApiPart:
    return ApiPart(
        paths={**devices_paths(), **southbound_paths()},
        tags={
            TAG: "The FIWARE IoT Agent's provisioning API: service groups and devices "
            "(docs/devices.md)."
        },
        schemas={
            "IotAttribute": ATTRIBUTE,
            "IotCommand": COMMAND,
            "IotStaticAttribute": STATIC_ATTRIBUTE,
            "IotService": SERVICE,
            "IotServiceChange": SERVICE_CHANGE,
            "IotServiceOut": SERVICE_OUT,
            "IotDevice": DEVICE,
            "IotDeviceChange": DEVICE_CHANGE,
            "IotDeviceOut": DEVICE_OUT,
            "IotError": IOT_ERROR,
        },
    )
