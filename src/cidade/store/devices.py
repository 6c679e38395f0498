"""The backend-independent half of device storage (devices/): checking a service group or a
device before it reaches SQL, so a bad one is a ValueError or KeyError rather than a database
error. Both stores keep the record as JSON beside the columns it is looked up by."""

from __future__ import annotations

from typing import Any

import orjson

from cidade.store.access import record_key


def group_columns(group: Any) -> tuple[str, str, str]:
    """(apikey, resource, JSON) of a service group."""
    apikey = record_key(group, "apikey", "a service group")
    resource = record_key(group, "resource", "a service group")
    return apikey, resource, orjson.dumps(group).decode()


def device_columns(device: Any) -> tuple[str, str]:
    """(device_id, JSON) of a device."""
    device_id = record_key(device, "device_id", "a device")
    return device_id, orjson.dumps(device).decode()


def check_tenant(tenant: Any) -> str:
    if not isinstance(tenant, str):
        raise ValueError(f"a tenant must be a string, got {tenant!r}")
    return tenant


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return limit, offset
