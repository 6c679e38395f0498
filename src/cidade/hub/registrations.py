"""The NGSI-LD CSourceRegistration data type (ETSI GS CIM 009 v1.8 §5.2.9) with its
RegistrationInfo (§5.2.10), EntityInfo (§5.2.8), TimeInterval (§5.2.11) and
RegistrationManagementInfo: client body <-> stored form, and which registrations a query
(§5.10.2) or a registration subscription (§5.11) selects.

Stored form: the client's members under their spec names, entity types and attribute names
expanded to IRIs (so a registration does not depend on the @context it was created with), times
in the stored format, the defaults of ``mode`` and ``operations`` filled in, ``createdAt`` and
``modifiedAt``. Every other member of the body is a Context Source Property: kept, its name
expanded, under ``_properties`` ({IRI: value}), so that no future member of the specification
can collide with one. ``status`` and the forwarding counters are never stored (nothing is
forwarded yet).

Everything here is pure (no I/O): the registration service and the notifier build on it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cidade.hub.members import (
    attribute_names,
    compiled_pattern,
    deletes_member,
    entity_selectors,
    id_and_type,
    key_values,
    object_with,
    positive,
    short,
)
from cidade.hub.model import Terms, expand_name, is_uri, normalize_scope
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.geo import CORE_LOCATION, GeoQuery, validate_geojson_geometry
from cidade.ngsild.query.q import QNode, evaluate
from cidade.ngsild.query.types import TypeExpr, type_matches

REGISTRATION_TYPE = "ContextSourceRegistration"
PROPERTIES_MEMBER = "_properties"  # Context Source Properties: {expanded name: value}

# §5.2.9 mode; "inclusive" when not given.
MODES = ("inclusive", "exclusive", "redirect", "auxiliary")
DEFAULT_MODE = "inclusive"
DEFAULT_OPERATIONS = ("federationOps",)
# §4.20 (Table 4.20-1 and 4.20-2): the operations a registration may name, one by one or by
# group.
OPERATION_GROUPS = frozenset({"federationOps", "updateOps", "retrieveOps", "redirectionOps"})
OPERATIONS = OPERATION_GROUPS | frozenset(
    {
        "createEntity",
        "updateEntity",
        "appendAttrs",
        "updateAttrs",
        "deleteAttrs",
        "deleteEntity",
        "createBatch",
        "upsertBatch",
        "updateBatch",
        "deleteBatch",
        "mergeBatch",
        "upsertTemporal",
        "appendAttrsTemporal",
        "deleteAttrsTemporal",
        "updateAttrsTemporal",
        "deleteAttrInstanceTemporal",
        "deleteTemporal",
        "mergeEntity",
        "replaceEntity",
        "replaceAttrs",
        "purgeEntity",
        "retrieveEntity",
        "queryEntity",
        "queryBatch",
        "retrieveTemporal",
        "queryTemporal",
        "retrieveEntityTypes",
        "retrieveEntityTypeDetails",
        "retrieveEntityTypeInfo",
        "retrieveAttrTypes",
        "retrieveAttrTypeDetails",
        "retrieveAttrTypeInfo",
        "createSubscription",
        "updateSubscription",
        "retrieveSubscription",
        "querySubscription",
        "deleteSubscription",
    }
)
# The geo members of a registration, by the IRI a geoproperty names them with.
GEO_MEMBERS = {
    CORE_LOCATION: "location",
    "https://uri.etsi.org/ngsi-ld/observationSpace": "observationSpace",
    "https://uri.etsi.org/ngsi-ld/operationSpace": "operationSpace",
}
# §4.11: the time properties a temporal query of registrations may name, and the interval of
# the registration each one is matched against.
TIME_INTERVALS = {
    "observedAt": "observationInterval",
    "createdAt": "managementInterval",
    "modifiedAt": "managementInterval",
}
TIMERELS = ("before", "after", "between")

# Members the system writes: a client may send them back (GET then PATCH) and they are ignored.
_READ_ONLY = frozenset(
    {"createdAt", "modifiedAt", "status", "timesSent", "timesFailed", "lastSuccess", "lastFailure"}
)
_TOP = frozenset(
    {
        "id",
        "type",
        "registrationName",
        "description",
        "information",
        "tenant",
        "observationInterval",
        "managementInterval",
        "location",
        "observationSpace",
        "operationSpace",
        "expiresAt",
        "endpoint",
        "contextSourceInfo",
        "scope",
        "mode",
        "operations",
        "refreshRate",
        "management",
    }
)
_MANDATORY = ("information", "endpoint")
_INFO = frozenset({"entities", "propertyNames", "relationshipNames"})
_INTERVAL = frozenset({"startAt", "endAt"})
_MANAGEMENT = frozenset({"localOnly", "cacheDuration", "timeout", "cooldown"})
# ISO 8601 duration (refreshRate, cacheDuration), e.g. PT1M, P1DT2H, P1W.
_DURATION = re.compile(
    r"P(?!$)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?"
)


# -- client -> stored ---------------------------------------------------------------------------


def normalize_registration(
    body: object, terms: Terms, now: str, *, registration_id: str | None = None
) -> dict[str, Any]:
    """A Register Context Source body (§5.9.2) in the stored form; 400 BadRequestData naming
    the offending member for anything invalid (an expiresAt in the past among them)."""
    return _normalize(body, terms, now, registration_id=registration_id, check_expiry=True)


def _normalize(
    body: object,
    terms: Terms,
    now: str,
    *,
    registration_id: str | None,
    check_expiry: bool,
    created_at: str | None = None,
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestData("a context source registration must be a JSON object")
    rid = id_and_type(body, registration_id, REGISTRATION_TYPE, "registration")
    for member in _MANDATORY:
        if body.get(member) is None:
            raise BadRequestData(f"a context source registration needs {member}")

    out: dict[str, Any] = {"id": rid, "type": REGISTRATION_TYPE}
    for key in ("registrationName", "description", "tenant"):
        if key in body:
            out[key] = _string(body[key], key)
    out["information"] = _information(body["information"], terms)
    for key in ("observationInterval", "managementInterval"):
        if key in body:
            out[key] = _interval(body[key], key)
    for key in GEO_MEMBERS.values():
        if key in body:
            out[key] = _geometry(body[key], key)
    if "expiresAt" in body:
        expires = timefmt.normalize(body["expiresAt"], "expiresAt")
        if check_expiry and expires <= timefmt.normalize(now, "now"):
            raise BadRequestData(f"expiresAt {body['expiresAt']!r} is not in the future")
        out["expiresAt"] = expires
    out["endpoint"] = _endpoint(body["endpoint"])
    if "contextSourceInfo" in body:
        out["contextSourceInfo"] = key_values(body["contextSourceInfo"], "contextSourceInfo")
    if "scope" in body:
        out["scope"] = normalize_scope(body["scope"])
    mode = body.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        raise BadRequestData(f"mode must be one of {', '.join(MODES)}, got {short(mode)}")
    out["mode"] = mode
    out["operations"] = _operations(body.get("operations", list(DEFAULT_OPERATIONS)))
    if "refreshRate" in body:
        out["refreshRate"] = _duration(body["refreshRate"], "refreshRate")
    if "management" in body:
        out["management"] = _management(body["management"])

    properties: dict[str, Any] = {}
    for key, value in body.items():
        if key in _TOP or key in _READ_ONLY or key == "@context":
            continue
        if key.startswith("@"):
            raise BadRequestData(f"{key!r} is not a member of a context source registration")
        if value is None:
            raise BadRequestData(f"the context source property {key!r} has no value (null)")
        properties[expand_name(key, terms, "context source property name")] = value
    if properties:
        out[PROPERTIES_MEMBER] = properties
    out["createdAt"] = created_at or now
    out["modifiedAt"] = now
    return out


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequestData(f"{what} must be a string, got {short(value)}")
    return value


def _information(value: object, terms: Terms) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadRequestData("information must be a non-empty array of RegistrationInfo")
    out = []
    for i, info in enumerate(value):
        what = f"information[{i}]"
        info = object_with(info, _INFO, what, "a RegistrationInfo object")
        if not info:
            # §5.2.10: a RegistrationInfo names entities, attributes or both.
            raise BadRequestData(
                f"{what} needs entities, propertyNames or relationshipNames (at least one)"
            )
        stored: dict[str, Any] = {}
        if "entities" in info:
            stored["entities"] = entity_selectors(
                info["entities"],
                f"{what}.entities",
                kind="EntityInfo",
                item="an EntityInfo object",
                entity_type=lambda value, where: expand_name(
                    value, terms, f"entity type in {where}"
                ),
            )
        for key in ("propertyNames", "relationshipNames"):
            if key in info:
                stored[key] = attribute_names(info[key], terms, f"{what}.{key}")
        out.append(stored)
    return out


def _interval(value: object, what: str) -> dict[str, str]:
    """§5.2.11 TimeInterval: startAt, and endAt after it when given."""
    if not isinstance(value, dict) or "startAt" not in value:
        raise BadRequestData(f"{what} must be a TimeInterval object with startAt")
    for key in value:
        if key not in _INTERVAL:
            raise BadRequestData(f"unknown member {key!r} in {what}")
    out = {"startAt": timefmt.normalize(value["startAt"], f"{what}.startAt")}
    if "endAt" in value:
        out["endAt"] = timefmt.normalize(value["endAt"], f"{what}.endAt")
        if out["endAt"] <= out["startAt"]:
            raise BadRequestData(f"{what}.endAt must be later than its startAt")
    return out


def _geometry(value: object, what: str) -> dict[str, Any]:
    """A GeoJSON geometry (location, observationSpace, operationSpace)."""
    if not isinstance(value, dict):
        raise BadRequestData(f"{what} must be a GeoJSON geometry")
    try:
        validate_geojson_geometry(value)
    except BadRequestData as exc:
        raise BadRequestData(f"{what}: {exc.detail}") from None
    return value


def _endpoint(value: object) -> str:
    """§5.2.9 endpoint: the URI of the context source (http or https, with a host)."""
    if not isinstance(value, str) or not is_uri(value):
        raise BadRequestData(f"endpoint must be a URI, got {short(value)}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a port out of range or not a number
    except ValueError:
        raise BadRequestData(f"endpoint {value!r} is not a valid URI") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadRequestData(f"endpoint {value!r} must be an http or https URL with a host")
    return value


def _operations(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequestData("operations must be a non-empty array of operation names")
    out: list[str] = []
    for name in value:
        if name not in OPERATIONS:
            raise BadRequestData(f"operations: {short(name)} is not an NGSI-LD operation name")
        if name not in out:
            out.append(name)
    return out


def _duration(value: object, what: str) -> str:
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        raise BadRequestData(f"{what} must be an ISO 8601 duration, got {short(value)}")
    return value


def _management(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestData("management must be a RegistrationManagementInfo object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _MANAGEMENT:
            raise BadRequestData(f"unknown member {key!r} in management")
        if key == "localOnly":
            if not isinstance(item, bool):
                raise BadRequestData("management.localOnly must be true or false")
            out[key] = item
        elif key == "cacheDuration":
            out[key] = _duration(item, "management.cacheDuration")
        else:
            out[key] = positive(item, f"management.{key}")
    return out


# -- update (§5.9.3) ----------------------------------------------------------------------------


def merge_registration(
    stored: dict[str, Any], patch: object, terms: Terms, now: str
) -> dict[str, Any]:
    """Update Context Source Registration (§5.9.3): each member of ``patch`` replaces the stored
    one whole; a null (or ``urn:ngsi-ld:null``) removes it, which a mandatory member refuses.
    The result is checked as a new registration is; ``id`` and ``type`` cannot change;
    ``createdAt`` stays, ``modifiedAt`` becomes ``now``."""
    if not isinstance(patch, dict):
        raise BadRequestData("a registration fragment must be a JSON object")
    fragment = {k: v for k, v in patch.items() if k != "@context"}
    if not fragment:
        raise BadRequestData("a registration update cannot be empty")
    if "id" in fragment and fragment["id"] != stored["id"]:
        raise BadRequestData("the id of a registration cannot be changed")
    if "type" in fragment and fragment["type"] != REGISTRATION_TYPE:
        raise BadRequestData(
            f"the type of a registration is {REGISTRATION_TYPE!r}, got {short(fragment['type'])}"
        )
    # Work in client form with the requester's terms: compacting then expanding with the same
    # terms gives back the stored IRIs, and the merged body is then checked like a new one.
    body = _client_form(stored, terms)
    for key, value in fragment.items():
        if deletes_member(value):
            if key in _MANDATORY or key in ("id", "type"):
                raise BadRequestData(f"{key} is mandatory: it cannot be removed")
            body.pop(key, None)
        else:
            body[key] = value
    return _normalize(
        body,
        terms,
        now,
        registration_id=stored["id"],
        check_expiry="expiresAt" in fragment,
        created_at=stored.get("createdAt", now),
    )


# -- stored -> client ---------------------------------------------------------------------------


def _client_form(stored: dict[str, Any], terms: Terms) -> dict[str, Any]:
    """The stored members with names compacted and times as responses show them; no system
    members."""
    out: dict[str, Any] = {}
    for key, value in stored.items():
        if key in _READ_ONLY or key.startswith("_"):
            continue
        if key == "information":
            out[key] = [_client_info(info, terms) for info in value]
        elif key in ("observationInterval", "managementInterval"):
            out[key] = {k: timefmt.display(v) for k, v in value.items()}
        elif key == "expiresAt":
            out[key] = timefmt.display(value)
        elif key == "contextSourceInfo":
            out[key] = [dict(item) for item in value]
        elif isinstance(value, list):
            out[key] = list(value)
        elif isinstance(value, dict):
            out[key] = dict(value)
        else:
            out[key] = value
    for iri, value in stored.get(PROPERTIES_MEMBER, {}).items():
        out[terms.compact(iri)] = value
    return out


def _client_info(info: dict[str, Any], terms: Terms) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "entities" in info:
        out["entities"] = [
            {**{k: v for k, v in e.items() if k != "type"}, "type": terms.compact(e["type"])}
            for e in info["entities"]
        ]
    for key in ("propertyNames", "relationshipNames"):
        if key in info:
            out[key] = [terms.compact(iri) for iri in info[key]]
    return out


def render_registration(
    stored: dict[str, Any], terms: Terms, *, sys_attrs: bool = False
) -> dict[str, Any]:
    """A stored registration as a client sees it (§5.10.1): names compacted with ``terms``,
    createdAt and modifiedAt with ``sys_attrs``."""
    out = _client_form(stored, terms)
    if sys_attrs:
        out["createdAt"] = timefmt.display(stored["createdAt"])
        out["modifiedAt"] = timefmt.display(stored["modifiedAt"])
    return out


def is_expired(stored: dict[str, Any], now: str) -> bool:
    expires = stored.get("expiresAt")
    return expires is not None and expires <= now


# -- which registrations a query or a subscription selects (§5.10.2, §5.11) --------------------


@dataclass(frozen=True, slots=True)
class TimeFilter:
    """A temporal query (§4.11) on a registration's observationInterval or managementInterval."""

    timerel: str
    time_at: str
    end_time_at: str | None = None
    timeproperty: str = "observedAt"

    def matches(self, stored: dict[str, Any]) -> bool:
        interval = stored.get(TIME_INTERVALS[self.timeproperty])
        if interval is None:
            return False
        start, end = interval["startAt"], interval.get("endAt")
        if self.timerel == "before":
            return start < self.time_at
        if self.timerel == "after":
            return end is None or end > self.time_at
        assert self.end_time_at is not None
        return start < self.end_time_at and (end is None or end > self.time_at)


def parse_time_filter(
    timerel: object, time_at: object, end_time_at: object, timeproperty: object
) -> TimeFilter | None:
    """The temporal query of a registration query or subscription (temporalQ); None when it has
    none; 400 for an invalid or incomplete one."""
    if timerel is None and time_at is None and end_time_at is None:
        if timeproperty is not None and timeproperty not in TIME_INTERVALS:
            raise BadRequestData(f"timeproperty {short(timeproperty)} is not one of " + _props())
        return None
    if timerel not in TIMERELS:
        raise BadRequestData(f"timerel must be one of before, after, between, got {timerel!r}")
    if time_at is None:
        raise BadRequestData(f"timerel={timerel} needs timeAt")
    at = timefmt.normalize(time_at, "timeAt")
    end = None
    if timerel == "between":
        if end_time_at is None:
            raise BadRequestData("timerel=between needs endTimeAt")
        end = timefmt.normalize(end_time_at, "endTimeAt")
        if end <= at:
            raise BadRequestData("endTimeAt must be later than timeAt")
    prop = "observedAt" if timeproperty is None else timeproperty
    if prop not in TIME_INTERVALS:
        raise BadRequestData(f"timeproperty {short(prop)} is not one of " + _props())
    return TimeFilter(timerel, at, end, prop)  # type: ignore[arg-type]


def _props() -> str:
    return ", ".join(TIME_INTERVALS)


@dataclass(frozen=True, slots=True)
class RegistrationFilter:
    """What a query (§5.10.2) or one EntitySelector of a subscription asks of registrations:
    each member left empty matches everything. ``types`` is a parsed type expression of IRIs;
    ``q`` and ``csf`` are matched against the Context Source Properties."""

    ids: tuple[str, ...] = ()
    id_pattern: str | None = None
    types: TypeExpr | None = None
    attrs: tuple[str, ...] = ()
    q: QNode | None = None
    csf: QNode | None = None
    geo: GeoQuery | None = None
    time: TimeFilter | None = None

    @property
    def selects_entities(self) -> bool:
        return bool(self.ids or self.id_pattern or self.types is not None)

    def info_matches(self, info: dict[str, Any]) -> bool:
        """Whether one RegistrationInfo provides what is asked: an EntityInfo for the entities
        (a RegistrationInfo without entities provides every entity) and one of the attributes
        (one without propertyNames nor relationshipNames provides every attribute)."""
        if self.selects_entities and "entities" in info:
            if not any(self._entity_matches(e) for e in info["entities"]):
                return False
        if self.attrs:
            names = [*info.get("propertyNames", ()), *info.get("relationshipNames", ())]
            if names and not any(a in names for a in self.attrs):
                return False
        return True

    def _entity_matches(self, info: dict[str, str]) -> bool:
        if self.types is not None and not type_matches(self.types, [info["type"]]):
            return False
        if self.ids:
            if "id" in info:
                if info["id"] not in self.ids:
                    return False
            elif "idPattern" in info:
                pattern = compiled_pattern(info["idPattern"])
                if not any(pattern.search(i) for i in self.ids):
                    return False
        if self.id_pattern:
            # An idPattern against another: they may select common ids, so it matches.
            if "id" in info and not compiled_pattern(self.id_pattern).search(info["id"]):
                return False
        return True

    def matches(self, stored: dict[str, Any], now: str) -> bool:
        """Whether a registration is selected (and not expired)."""
        if is_expired(stored, now):
            return False
        if self.time is not None:
            if not self.time.matches(stored):
                return False
        elif not provides_latest(stored, now):
            return False
        if self.geo is not None:
            geometry = stored.get(GEO_MEMBERS[self.geo.geoproperty])
            if geometry is None or not self.geo.matches(geometry):
                return False
        for node in (self.q, self.csf):
            if node is not None and not evaluate(node, _as_entity(stored)):
                return False
        return any(self.info_matches(info) for info in stored["information"])

    def relevant(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The registration with only the RegistrationInfo elements that match (what a
        notification carries, §5.11)."""
        infos = [info for info in stored["information"] if self.info_matches(info)]
        return {**stored, "information": infos or stored["information"]}


def provides_latest(stored: dict[str, Any], now: str) -> bool:
    """§5.10.2: without a temporal query, only registrations of context sources providing the
    latest information count: those without an observationInterval, or whose
    observationInterval has not ended."""
    interval = stored.get("observationInterval")
    return interval is None or "endAt" not in interval or interval["endAt"] > now


def check_geoproperty(geo: GeoQuery | None) -> None:
    """A geo-query of registrations names location, observationSpace or operationSpace."""
    if geo is not None and geo.geoproperty not in GEO_MEMBERS:
        raise BadRequestData(
            "the geoproperty of a registration query is location, observationSpace or"
            f" operationSpace, got {geo.geoproperty!r}"
        )


def _as_entity(stored: dict[str, Any]) -> dict[str, Any]:
    """The Context Source Properties as the attributes of an entity, for q."""
    attrs = {
        iri: [{"type": "Property", "value": value}]
        for iri, value in stored.get(PROPERTIES_MEMBER, {}).items()
    }
    return {"id": stored["id"], "type": [], "attrs": attrs}


def select(
    filters: list[RegistrationFilter], stored: dict[str, Any], now: str
) -> dict[str, Any] | None:
    """The registration as the first of ``filters`` that selects it sees it (its relevant
    RegistrationInfo elements), or None when none does."""
    for flt in filters:
        if flt.matches(stored, now):
            return flt.relevant(stored)
    return None


__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_OPERATIONS",
    "GEO_MEMBERS",
    "MODES",
    "OPERATIONS",
    "PROPERTIES_MEMBER",
    "REGISTRATION_TYPE",
    "RegistrationFilter",
    "TimeFilter",
    "check_geoproperty",
    "is_expired",
    "merge_registration",
    "normalize_registration",
    "parse_time_filter",
    "provides_latest",
    "render_registration",
    "select",
]
