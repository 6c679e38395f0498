"""A device's message -> one NGSI-LD entity fragment, as the FIWARE IoT Agent for JSON maps it.

A device's *profile* merges what its service group and its own provisioning say: the entity it
feeds (id, type), how each measure's short ``object_id`` becomes an attribute (name, type, unit),
the static attributes every update carries, and whether measures nobody declared pass through
(``explicitAttrs``). Mapping is pure: the same message and profile give the same fragment, and a
message that breaks any rule is refused whole (``MappingError``), so nothing half-written stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cidade.hub.model import is_uri
from cidade.ngsild import timefmt

# The measure that dates a message, as the IoT agents name it.
TIME_INSTANT = "TimeInstant"
NUMBER_TYPES = frozenset({"Number", "Float", "Integer", "number", "float", "integer", "Double"})
TEXT_TYPES = frozenset({"Text", "String", "text", "string"})
BOOLEAN_TYPES = frozenset({"Boolean", "boolean", "Bool"})
DATE_TYPES = frozenset({"DateTime", "ISO8601", "Date"})
GEO_TYPES = frozenset(
    {"geo:json", "GeoProperty", "geo:point", "geo:line", "geo:polygon", "Point", "LineString"}
)
RELATIONSHIP_TYPES = frozenset({"Relationship", "relationship"})


class MappingError(ValueError):
    """Why a message cannot be written (said in the count and the log, with the device id)."""


@dataclass(frozen=True, slots=True)
class AttributeRule:
    object_id: str
    name: str
    type: str = "Property"
    unit_code: str | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything needed to map one device's messages."""

    tenant: str
    device_id: str
    apikey: str
    entity_id: str
    entity_type: str
    rules: dict[str, AttributeRule] = field(default_factory=dict)  # by object_id (and name)
    static: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, NGSI-LD attribute)
    commands: tuple[str, ...] = ()
    explicit: bool = False
    timezone: str | None = None


def entity_id_for(entity_type: str, device_id: str) -> str:
    """The IoT agents' default entity id in NGSI-LD: urn:ngsi-ld:<type>:<device_id>."""
    return f"urn:ngsi-ld:{entity_type}:{device_id}"


def _rules(attributes: object) -> dict[str, AttributeRule]:
    rules: dict[str, AttributeRule] = {}
    for a in attributes if isinstance(attributes, list) else []:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            continue
        object_id = a.get("object_id") if isinstance(a.get("object_id"), str) else a["name"]
        unit = a.get("unitCode")
        metadata = a.get("metadata")
        if unit is None and isinstance(metadata, dict):
            meta = metadata.get("unitCode")
            unit = meta.get("value") if isinstance(meta, dict) else meta
        rule = AttributeRule(
            object_id=object_id,
            name=a["name"],
            type=a.get("type") if isinstance(a.get("type"), str) else "Property",
            unit_code=unit if isinstance(unit, str) else None,
        )
        rules[object_id] = rule
        # A device may also send the attribute's full name.
        rules.setdefault(rule.name, rule)
    return rules


def _static(static: object) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for a in static if isinstance(static, list) else []:
        if isinstance(a, dict) and isinstance(a.get("name"), str) and "value" in a:
            rule = AttributeRule(a["name"], a["name"], a.get("type") or "Property")
            out.append((a["name"], _attribute(rule, a["value"], None)))
    return out


def build_profile(
    tenant: str, device_id: str, apikey: str, group: dict | None, device: dict | None
) -> Profile:
    """The device's own provisioning wins over its group's, attribute by attribute."""
    group = group or {}
    device = device or {}
    entity_type = device.get("entity_type") or group.get("entity_type") or "Thing"
    rules = {**_rules(group.get("attributes")), **_rules(device.get("attributes"))}
    static = dict(_static(group.get("static_attributes")))
    static.update(_static(device.get("static_attributes")))
    commands = [
        c["name"]
        for c in [*(group.get("commands") or []), *(device.get("commands") or [])]
        if isinstance(c, dict) and isinstance(c.get("name"), str)
    ]
    explicit = device.get("explicitAttrs", group.get("explicitAttrs", False))
    return Profile(
        tenant=tenant,
        device_id=device_id,
        apikey=apikey,
        entity_id=device.get("entity_name") or entity_id_for(entity_type, device_id),
        entity_type=entity_type,
        rules=rules,
        static=tuple(static.items()),
        commands=tuple(dict.fromkeys(commands)),
        explicit=explicit is True,
        timezone=device.get("timezone") or group.get("timezone"),
    )


def observed_at(value: object, timezone: str | None) -> str:
    """A TimeInstant as an NGSI-LD observedAt (UTC); a time without offset is in the device's
    timezone (UTC when it has none)."""
    if not isinstance(value, str):
        raise MappingError(f"{TIME_INSTANT} must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MappingError(f"{TIME_INSTANT} {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        try:
            zone = ZoneInfo(timezone) if timezone else UTC
        except (ZoneInfoNotFoundError, ValueError):
            raise MappingError(f"unknown timezone {timezone!r}") from None
        parsed = parsed.replace(tzinfo=zone)
    return timefmt.from_datetime(parsed)


def to_fragment(profile: Profile, measures: object, received_at: str) -> dict[str, Any]:
    """The NGSI-LD entity (normalized) one message updates: its measures as attributes, each
    observed at the message's TimeInstant (else when it was received), plus the static ones."""
    if not isinstance(measures, dict):
        raise MappingError("a message must be a JSON object of measures")
    at = received_at
    if TIME_INSTANT in measures:
        at = observed_at(measures[TIME_INSTANT], profile.timezone)
    fragment: dict[str, Any] = {"id": profile.entity_id, "type": profile.entity_type}
    for key, value in measures.items():
        if key == TIME_INSTANT:
            continue
        if key in profile.commands:
            raise MappingError(f"{key} is a command of this device, not a measure")
        rule = profile.rules.get(key)
        if rule is None:
            if profile.explicit:
                continue  # explicitAttrs: what was not declared is dropped, as the agents do
            rule = AttributeRule(key, key, _guess_type(value))
        if rule.name in ("id", "type", "@context", "scope"):
            raise MappingError(f"{rule.name} cannot be a measure")
        fragment[rule.name] = _attribute(rule, value, at)
    if len(fragment) == 2:
        raise MappingError("the message holds no measure")
    for name, attribute in profile.static:
        fragment.setdefault(name, attribute)
    return fragment


def single_value(profile: Profile, object_id: str, raw: bytes) -> dict[str, Any]:
    """``.../attrs/<object_id>``: the payload is the measure's value alone (JSON, or bare
    text)."""
    import orjson

    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            raise MappingError("the value is neither JSON nor UTF-8 text") from None
    return {object_id: value}


def _guess_type(value: object) -> str:
    if isinstance(value, dict) and isinstance(value.get("type"), str) and "coordinates" in value:
        return "geo:json"
    return "Property"


def _attribute(rule: AttributeRule, value: object, at: str | None) -> dict[str, Any]:
    kind = rule.type
    attribute: dict[str, Any]
    if kind in RELATIONSHIP_TYPES:
        if not isinstance(value, str) or not is_uri(value):
            raise MappingError(f"{rule.name} must be the id (a URI) of an entity")
        attribute = {"type": "Relationship", "object": value}
    elif kind in GEO_TYPES:
        attribute = {"type": "GeoProperty", "value": _geometry(rule, value)}
    else:
        attribute = {"type": "Property", "value": _value(rule, value)}
    if at is not None:
        attribute["observedAt"] = at
    if rule.unit_code and attribute["type"] == "Property":
        attribute["unitCode"] = rule.unit_code
    return attribute


def _value(rule: AttributeRule, value: object) -> Any:
    kind = rule.type
    if value is None:
        raise MappingError(f"{rule.name} has no value (null)")
    if kind in NUMBER_TYPES:
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise MappingError(f"{rule.name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MappingError(f"{rule.name} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise MappingError(f"{rule.name} must be a finite number")
        if kind in ("Integer", "integer") and not float(value).is_integer():
            raise MappingError(f"{rule.name} must be an integer, got {value!r}")
        return value
    if kind in BOOLEAN_TYPES:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise MappingError(f"{rule.name} must be true or false, got {value!r}")
    if kind in TEXT_TYPES:
        if isinstance(value, dict | list):
            raise MappingError(f"{rule.name} must be text, got {type(value).__name__}")
        return value if isinstance(value, str) else str(value).lower()
    if kind in DATE_TYPES:
        return {"@type": "DateTime", "@value": observed_at(value, None)}
    return value


def _geometry(rule: AttributeRule, value: object) -> dict[str, Any]:
    if isinstance(value, str):
        # geo:point is "latitude, longitude", as NGSI v2 and the IoT agents write it.
        parts = value.split(",")
        try:
            lat, lon = (float(p) for p in parts)
        except ValueError:
            raise MappingError(f"{rule.name} must be 'latitude, longitude'") from None
        value = {"type": "Point", "coordinates": [lon, lat]}
    if not isinstance(value, dict) or "type" not in value or "coordinates" not in value:
        raise MappingError(f"{rule.name} must be a GeoJSON geometry or 'latitude, longitude'")
    return value
