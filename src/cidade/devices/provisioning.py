"""Provisioning: service groups and devices as the FIWARE IoT Agent's API takes them
(docs/devices.md), checked and turned into the records the store keeps.

A service group (``apikey`` + ``resource``, unique across tenants) is the template of every device
that sends with its apikey; a device (``device_id``, unique in its tenant) may name its own entity,
type and attributes. Everything here is pure but the few store calls of ``DeviceProvisioning``;
a refusal is an ``IotError`` in the agent's own format and leaves the store untouched.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from cidade.hub.model import MAX_IRI_BYTES, check_name, is_uri
from cidade.ngsild.errors import NgsiError
from cidade.store import Store

DEFAULT_RESOURCE = "/iot/json"
DEFAULT_TYPE = "Thing"  # the entity type of a device that names none, nor its group
DEFAULT_SERVICE_PATH = "/"
MAX_KEY = 256  # apikey, device_id, resource, object_id, ... characters
MAX_ITEMS = 1000  # services or devices in one request; attributes of one group or device


class IotError(Exception):
    """An error of the provisioning API, in the IoT Agent's format: {"name", "message"}."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message

    def body(self) -> dict[str, str]:
        return {"name": self.name, "message": self.message}


def wrong_syntax(message: str) -> IotError:
    return IotError(400, "WRONG_SYNTAX", message)


def bad_request(message: str) -> IotError:
    return IotError(400, "BAD_REQUEST", message)


def from_ngsi(error: NgsiError) -> IotError:
    """A body the hub's reader refused (media type, size, not JSON), in the agent's format."""
    names = {413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_CONTENT_TYPE"}
    return IotError(error.status, names.get(error.status, "WRONG_SYNTAX"), error.detail)


# -- members --------------------------------------------------------------------------------

# Characters never allowed in an apikey or a device_id: they travel in MQTT topics
# (/<apikey>/<device_id>/attrs) and URL paths.
_BAD_KEY = re.compile(r"[\s/#+?%\x00-\x1f\x7f]")
# The IoT agent's own pattern for object ids and attribute names forbids these.
_BAD_ID = re.compile(r"[\s<>();'=\"\x00-\x1f\x7f]")
_BAD_RESOURCE = re.compile(r"[\s#+?%\x00-\x1f\x7f]")
_SERVICE_PATH = re.compile(r"^/[^\s\x00-\x1f\x7f]{0,255}$")


def _string(value: Any, what: str, *, max_len: int = MAX_KEY) -> str:
    if not isinstance(value, str) or not value:
        raise wrong_syntax(f"{what} must be a non-empty string")
    if len(value) > max_len:
        raise wrong_syntax(f"{what} is longer than {max_len} characters")
    if "\x00" in value:
        raise wrong_syntax(f"{what} may not contain NUL")
    return value


def check_key(value: Any, what: str) -> str:
    """An apikey or a device_id: a non-empty string without spaces, '/', '#', '+', '?', '%'."""
    value = _string(value, what)
    if _BAD_KEY.search(value):
        raise wrong_syntax(f"{what} may not contain spaces, control characters, / # + ? or %")
    return value


def check_resource(value: Any) -> str:
    """A resource: a path such as /iot/json."""
    value = _string(value, "resource")
    if not value.startswith("/") or _BAD_RESOURCE.search(value):
        raise wrong_syntax("resource must be a path such as /iot/json (no spaces, # + ? or %)")
    return value


def check_service_path(value: str | None) -> str:
    """The Fiware-ServicePath header: kept with the record, no other meaning here."""
    if value is None or value == "":
        return DEFAULT_SERVICE_PATH
    if not _SERVICE_PATH.match(value):
        raise IotError(
            400, "WRONG_SERVICE_PATH", "Fiware-ServicePath must start with / (no spaces)"
        )
    return value


def _object_id(value: Any, what: str) -> str:
    value = _string(value, what)
    if _BAD_ID.search(value):
        raise wrong_syntax(f"{what} may not contain spaces or any of < > ( ) ; ' = \"")
    return value


def _name(value: Any, what: str) -> str:
    _string(value, what)
    if value in ("id", "type") or value.startswith("@"):
        raise wrong_syntax(f"{what} {value!r} is reserved for the entity itself")
    try:
        return check_name(value, what)
    except NgsiError:
        raise wrong_syntax(f"{what} {value!r} is not a valid NGSI-LD name") from None


def _entity_type(value: Any, what: str = "entity_type") -> str:
    _string(value, what)
    try:
        return check_name(value, what)
    except NgsiError:
        raise wrong_syntax(f"{what} {value!r} is not a valid NGSI-LD type name") from None


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise wrong_syntax(f"{what} must be true or false")
    return value


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: Any) -> str:
    value = _string(value, "timezone", max_len=64)
    if value not in _zones():
        raise wrong_syntax(f"timezone {value!r} is not an IANA time zone (e.g. Europe/Lisbon)")
    return value


def _endpoint(value: Any) -> str:
    value = _string(value, "endpoint", max_len=2048)
    if not is_uri(value):
        raise wrong_syntax("endpoint must be a URL")
    return value


# The members of one attribute, command or static attribute the IoT agent documents; a member
# it does not know is refused there too (its templates forbid additional properties).
_ATTRIBUTE_MEMBERS = {
    "object_id",
    "name",
    "type",
    "expression",
    "skipValue",
    "entity_name",
    "entity_type",
    "reverse",
    "metadata",
    "mqtt",
    "payloadType",
    "contentType",
}
_COMMAND_MEMBERS = _ATTRIBUTE_MEMBERS | {"value"}
_STATIC_MEMBERS = {"name", "type", "value", "metadata"}


def _items(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise wrong_syntax(f"{what} must be an array")
    if len(value) > MAX_ITEMS:
        raise wrong_syntax(f"{what} has more than {MAX_ITEMS} items")
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise wrong_syntax(f"{what}[{n}] must be an object")
    return value


def _attribute(item: dict[str, Any], where: str, members: set[str]) -> dict[str, Any]:
    unknown = set(item) - members
    if unknown:
        raise wrong_syntax(f"{where} has unknown member(s): {', '.join(sorted(unknown))}")
    out = dict(item)
    out["name"] = _name(item.get("name"), f"{where}.name")
    out["type"] = _string(item.get("type"), f"{where}.type")
    if "object_id" in item:
        out["object_id"] = _object_id(item["object_id"], f"{where}.object_id")
    if "expression" in item:
        _string(item["expression"], f"{where}.expression", max_len=4096)
    if "entity_name" in item and not is_uri(item["entity_name"]):
        raise wrong_syntax(f"{where}.entity_name must be a URI")
    if "entity_type" in item:
        _entity_type(item["entity_type"], f"{where}.entity_type")
    if "metadata" in item and not isinstance(item["metadata"], dict):
        raise wrong_syntax(f"{where}.metadata must be an object")
    return out


def _attributes(value: Any, what: str, members: set[str]) -> list[dict[str, Any]]:
    out = [_attribute(item, f"{what}[{n}]", members) for n, item in enumerate(_items(value, what))]
    names = [a["name"] for a in out]
    if len(set(names)) != len(names):
        raise wrong_syntax(f"{what} names an attribute twice")
    sources = [a.get("object_id", a["name"]) for a in out if "entity_name" not in a]
    if len(set(sources)) != len(sources):
        raise wrong_syntax(f"{what} maps one object_id twice")
    return out


def _static_attributes(value: Any) -> list[dict[str, Any]]:
    out = []
    for n, item in enumerate(_items(value, "static_attributes")):
        where = f"static_attributes[{n}]"
        unknown = set(item) - _STATIC_MEMBERS
        if unknown:
            raise wrong_syntax(f"{where} has unknown member(s): {', '.join(sorted(unknown))}")
        if "value" not in item:
            raise wrong_syntax(f"{where} has no value")
        if "metadata" in item and not isinstance(item["metadata"], dict):
            raise wrong_syntax(f"{where}.metadata must be an object")
        out.append(
            {
                **item,
                "name": _name(item.get("name"), f"{where}.name"),
                "type": _string(item.get("type"), f"{where}.type"),
            }
        )
    names = [a["name"] for a in out]
    if len(set(names)) != len(names):
        raise wrong_syntax("static_attributes names an attribute twice")
    return out


Checker = Callable[[Any], Any]

# Members both groups and devices keep: name -> checker.
_COMMON: dict[str, Checker] = {
    "entity_type": _entity_type,
    "attributes": lambda v: _attributes(v, "attributes", _ATTRIBUTE_MEMBERS),
    "commands": lambda v: _attributes(v, "commands", _COMMAND_MEMBERS),
    "static_attributes": _static_attributes,
    "explicitAttrs": lambda v: _bool(v, "explicitAttrs"),
    "timezone": _timezone,
}
GROUP_MEMBERS: dict[str, Checker] = {
    "apikey": lambda v: check_key(v, "apikey"),
    "resource": check_resource,
    **_COMMON,
    "autoprovision": lambda v: _bool(v, "autoprovision"),
}
DEVICE_MEMBERS: dict[str, Checker] = {
    "device_id": lambda v: check_key(v, "device_id"),
    "entity_name": lambda v: _entity_name(v),
    "apikey": lambda v: check_key(v, "apikey"),
    **_COMMON,
    "protocol": lambda v: _string(v, "protocol"),
    "transport": lambda v: _transport(v),
    "endpoint": _endpoint,
}
# Members of the agent's data model that Cidade accepts and does not keep: lazy attributes
# (it registers no context provider), the context broker and its credentials (it is the
# broker), and the agent's internal switches. Their types are checked all the same.
IGNORED: dict[str, Checker] = {
    "lazy": lambda v: _attributes(v, "lazy", _ATTRIBUTE_MEMBERS),
    "cbroker": lambda v: _string(v, "cbroker", max_len=2048),
    "cbHost": lambda v: _string(v, "cbHost", max_len=2048),
    "token": lambda v: _string(v, "token", max_len=4096),
    "trust": lambda v: _string(v, "trust", max_len=4096),
    "timestamp": lambda v: _bool(v, "timestamp"),
    "internal_attributes": lambda v: v,
    "ngsiVersion": lambda v: _string(v, "ngsiVersion"),
    "payloadType": lambda v: _string(v, "payloadType"),
    "entityNameExp": lambda v: _string(v, "entityNameExp", max_len=4096),
    "expressionLanguage": lambda v: _string(v, "expressionLanguage"),
    "defaultEntityNameConjunction": lambda v: _string(v, "defaultEntityNameConjunction"),
    "description": lambda v: _string(v, "description", max_len=4096),
    "storeLastMeasure": lambda v: _bool(v, "storeLastMeasure"),
    "useCBflowControl": lambda v: _bool(v, "useCBflowControl"),
    "polling": lambda v: _bool(v, "polling"),
    # set by the agent from the headers; a body's are ignored there too
    "service": lambda v: v,
    "subservice": lambda v: v,
    "service_path": lambda v: v,
}


def _entity_name(value: Any) -> str:
    value = _string(value, "entity_name", max_len=MAX_IRI_BYTES)
    if len(value.encode()) > MAX_IRI_BYTES:
        raise wrong_syntax(f"entity_name is longer than {MAX_IRI_BYTES} bytes, the hub's limit")
    if not is_uri(value):
        raise wrong_syntax(f"entity_name {value!r} must be a URI (urn:ngsi-ld:Type:id)")
    return value


def _transport(value: Any) -> str:
    if value not in ("MQTT", "HTTP"):
        raise wrong_syntax("transport must be MQTT or HTTP")
    return value


def _members(body: Any, what: str, kept: dict[str, Checker]) -> dict[str, Any]:
    """The members to keep, each checked; ignored members checked and dropped. Members the
    agent's data model does not have are accepted and dropped, as the agent does."""
    if not isinstance(body, dict):
        raise wrong_syntax(f"{what} must be an object")
    out = {}
    for name, value in body.items():
        if name in kept:
            out[name] = kept[name](value)
        elif name in IGNORED:
            IGNORED[name](value)
    return out


def group_record(body: Any, service_path: str) -> dict[str, Any]:
    """A new service group as the store keeps it: ``apikey`` required, ``resource`` defaulted,
    ``autoprovision`` true unless false."""
    group = _members(body, "a service", GROUP_MEMBERS)
    if "apikey" not in group:
        raise wrong_syntax("a service needs an apikey")
    group.setdefault("resource", DEFAULT_RESOURCE)
    group.setdefault("autoprovision", True)
    group["service_path"] = service_path
    return group


def changed_group(current: dict[str, Any], body: Any, service_path: str) -> dict[str, Any]:
    """``current`` with the members of ``body`` (PUT): its apikey and resource stay those of the
    query, as with the agent."""
    change = _members(body, "the body", GROUP_MEMBERS)
    change.pop("apikey", None)
    change.pop("resource", None)
    return {**current, **change, "service_path": service_path}


def device_record(
    body: Any, service_path: str, group: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A new device as the store keeps it: ``entity_type`` from the device, else its group's,
    else Thing; ``entity_name`` urn:ngsi-ld:<entity_type>:<device_id> unless given."""
    device = _members(body, "a device", DEVICE_MEMBERS)
    if "device_id" not in device:
        raise IotError(400, "MISSING_ATTRIBUTES", "a device needs a device_id")
    if "entity_type" not in device:
        device["entity_type"] = (group or {}).get("entity_type", DEFAULT_TYPE)
    device.setdefault("entity_name", f"urn:ngsi-ld:{device['entity_type']}:{device['device_id']}")
    device["service_path"] = service_path
    return device


def changed_device(current: dict[str, Any], body: Any, service_path: str) -> dict[str, Any]:
    if isinstance(body, dict) and "device_id" in body:
        raise bad_request("Can't change the ID of a preprovisioned device")
    change = _members(body, "the body", DEVICE_MEMBERS)
    return {**current, **change, "service_path": service_path}


def render_group(tenant: str, group: dict[str, Any]) -> dict[str, Any]:
    """A group as the agent shows it: with its service and subservice."""
    out = {k: v for k, v in group.items() if k != "service_path"}
    out["service"] = tenant
    out["subservice"] = group.get("service_path", DEFAULT_SERVICE_PATH)
    return out


def render_device(tenant: str, device: dict[str, Any]) -> dict[str, Any]:
    out = dict(device)
    out["service"] = tenant
    out.setdefault("service_path", DEFAULT_SERVICE_PATH)
    return out


def _list_of(body: Any, key: str) -> list[Any]:
    if not isinstance(body, dict):
        raise wrong_syntax("the body must be a JSON object")
    unknown = set(body) - {key}
    if unknown:
        raise wrong_syntax(f"unknown member(s): {', '.join(sorted(unknown))}")
    items = body.get(key)
    if not isinstance(items, list) or not items:
        raise wrong_syntax(f"{key} must be a non-empty array")
    if len(items) > MAX_ITEMS:
        raise wrong_syntax(f"at most {MAX_ITEMS} {key} at once")
    return items


def _announced(method: Any) -> Any:
    """After a change (made, or tried and undone), those who cache groups and devices forget."""

    @functools.wraps(method)
    async def wrapper(self: DeviceProvisioning, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        finally:
            for forget in self.on_change:
                forget()

    return wrapper


class DeviceProvisioning:
    """The provisioning operations on the store; every check before the first write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Called after every change, in this process (other workers hear the store's
        # "devices" announcement).
        self.on_change: list[Callable[[], None]] = []

    # -- service groups -------------------------------------------------------------------------

    @_announced
    async def create_groups(self, tenant: str, service_path: str, body: Any) -> None:
        """All or nothing: every group is checked, and none may exist yet, before the first is
        written; should one be taken meanwhile, those written are removed again."""
        groups = [group_record(g, service_path) for g in _list_of(body, "services")]
        pairs = [(g["apikey"], g["resource"]) for g in groups]
        seen: set[tuple[str, str]] = set()
        for pair in pairs:
            if pair in seen:
                raise _duplicate_group(*pair)
            seen.add(pair)
        for apikey in {a for a, _ in pairs}:
            for _, existing in await self.store.service_groups(apikey=apikey):
                if (apikey, existing["resource"]) in seen:
                    raise _duplicate_group(apikey, existing["resource"])
        written: list[dict[str, Any]] = []
        for group in groups:
            if not await self.store.save_service_group(tenant, group, create=True):
                for done in written:
                    await self.store.delete_service_group(tenant, done["apikey"], done["resource"])
                raise _duplicate_group(group["apikey"], group["resource"])
            written.append(group)

    async def list_groups(
        self, tenant: str, *, apikey: str | None = None, resource: str | None = None
    ) -> list[dict[str, Any]]:
        groups = await self.store.service_groups(tenant, apikey=apikey)
        return [
            render_group(t, g) for t, g in groups if resource is None or g["resource"] == resource
        ]

    async def _group(self, tenant: str, apikey: str, resource: str) -> dict[str, Any]:
        for _, group in await self.store.service_groups(tenant, apikey=apikey):
            if group["resource"] == resource:
                return group
        raise IotError(
            404,
            "DEVICE_GROUP_NOT_FOUND",
            f"Couldn't find device group for apikey {apikey} and resource {resource}",
        )

    @_announced
    async def update_group(
        self, tenant: str, service_path: str, apikey: str, resource: str, body: Any
    ) -> None:
        current = await self._group(tenant, apikey, resource)
        group = changed_group(current, body, service_path)
        if not await self.store.save_service_group(tenant, group, create=False):
            await self._group(tenant, apikey, resource)  # deleted meanwhile: 404

    @_announced
    async def delete_group(self, tenant: str, apikey: str, resource: str) -> None:
        if not await self.store.delete_service_group(tenant, apikey, resource):
            await self._group(tenant, apikey, resource)  # raises 404

    # -- devices --------------------------------------------------------------------------------

    async def _group_of(self, tenant: str, device: dict[str, Any]) -> dict[str, Any] | None:
        """The group a device's apikey links it to in its tenant (the default resource first);
        an apikey only other tenants' groups use is refused."""
        apikey = device.get("apikey")
        if not isinstance(apikey, str):
            return None
        groups = await self.store.service_groups(apikey=check_key(apikey, "apikey"))
        own = [g for t, g in groups if t == tenant]
        if groups and not own:
            raise bad_request(f"the apikey {apikey} belongs to a service group of another service")
        own.sort(key=lambda g: g["resource"] != DEFAULT_RESOURCE)
        return own[0] if own else None

    @_announced
    async def create_devices(self, tenant: str, service_path: str, body: Any) -> None:
        items = _list_of(body, "devices")
        devices = []
        for item in items:
            group = await self._group_of(tenant, item) if isinstance(item, dict) else None
            devices.append(device_record(item, service_path, group))
        seen: set[str] = set()
        for device in devices:
            if device["device_id"] in seen or await self.store.get_device(
                tenant, device["device_id"]
            ):
                raise _duplicate_device(device["device_id"])
            seen.add(device["device_id"])
        written: list[str] = []
        for device in devices:
            if not await self.store.save_device(tenant, device, create=True):
                for device_id in written:
                    await self.store.delete_device(tenant, device_id)
                raise _duplicate_device(device["device_id"])
            written.append(device["device_id"])

    async def list_devices(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        devices, count = await self.store.list_devices(tenant, limit, offset)
        return [render_device(tenant, d) for d in devices], count

    async def _device(self, tenant: str, device_id: str) -> dict[str, Any]:
        device = await self.store.get_device(tenant, check_device_id(device_id))
        if device is None:
            raise _device_not_found(device_id)
        return device

    async def get_device(self, tenant: str, device_id: str) -> dict[str, Any]:
        return render_device(tenant, await self._device(tenant, device_id))

    @_announced
    async def update_device(
        self, tenant: str, service_path: str, device_id: str, body: Any
    ) -> None:
        current = await self._device(tenant, device_id)
        device = changed_device(current, body, service_path)
        if device.get("apikey") != current.get("apikey"):
            await self._group_of(tenant, device)
        if not await self.store.save_device(tenant, device, create=False):
            raise _device_not_found(device_id)

    @_announced
    async def delete_device(self, tenant: str, device_id: str) -> None:
        if not await self.store.delete_device(tenant, check_device_id(device_id)):
            raise _device_not_found(device_id)


def check_device_id(device_id: str) -> str:
    """A device id from a URL: one that could never have been provisioned is simply absent."""
    try:
        return check_key(device_id, "device_id")
    except IotError:
        raise _device_not_found(device_id) from None


def _duplicate_group(apikey: str, resource: str) -> IotError:
    return IotError(
        409,
        "DUPLICATE_GROUP",
        f"A device configuration already exists for resource {resource} and API Key {apikey}",
    )


def _duplicate_device(device_id: str) -> IotError:
    return IotError(
        409,
        "DUPLICATE_DEVICE_ID",
        f"A device with the same pair (Service, DeviceId) was found: {device_id}",
    )


def _device_not_found(device_id: str) -> IotError:
    return IotError(404, "DEVICE_NOT_FOUND", f"No device was found with id: {device_id[:256]}")
