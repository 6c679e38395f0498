"""Small builders for NGSI-LD test payloads."""

from __future__ import annotations

from typing import Any


def entity(eid: str, etype: str = "Building", **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": eid, "type": etype}
    for name, value in attrs.items():
        wrapped = isinstance(value, dict) or (
            isinstance(value, list) and value and isinstance(value[0], dict)
        )
        body[name] = value if wrapped else {"type": "Property", "value": value}
    return body


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
