"""The query parameters each NGSI-LD operation defines (ETSI GS CIM 009 §6.3.20, §6.4 to §6.31).

A request with a parameter its operation does not define is 400 InvalidRequest (§6.3.20): a
misspelt ``typ=`` or ``limt=`` would otherwise be answered as if it were not there. The sets
name every parameter the specification defines for the operation (up to v1.9), also those this
broker does not implement: those are refused where they are read, as 501 NotImplemented
(``http.reject_unsupported``), which tells a client more than "unknown".
"""

from __future__ import annotations

from starlette.requests import Request

from cidade.ngsild.errors import InvalidRequest

# Distributed operations (§6.3.18): local=true, and the Via header's query form.
_DISTRIBUTED = frozenset({"local", "via"})
# The representation of entities in a response (§6.3.7, §6.3.11, §4.15, §4.16).
_REPRESENTATION = frozenset(
    {"options", "format", "lang", "pick", "omit", "attrs", "geometryProperty"}
    | {"datasetId", "join", "joinLevel", "containedBy", "entityMap", "expandValues"}
    | {"doNotCompact"}
)
_PAGING = frozenset({"limit", "offset", "count"})
_QUERY = frozenset(
    {"id", "type", "idPattern", "q", "csf", "scopeQ"}
    | {"georel", "geometry", "coordinates", "geoproperty"}
    | {"orderBy", "collation", "orderFrom", "orderGeometry"}
)
# What identifies the target of an operation on one entity (the entity type may be given).
_ONE = frozenset({"type"}) | _DISTRIBUTED

QUERY_ENTITIES = _QUERY | _REPRESENTATION | _PAGING | _DISTRIBUTED
RETRIEVE_ENTITY = _ONE | _REPRESENTATION
CREATE_ENTITY = _DISTRIBUTED
REPLACE_ENTITY = _ONE | {"lang"}
MERGE_ENTITY = _ONE | {"observedAt", "lang", "options", "format"}
DELETE_ENTITY = _ONE
PURGE_ENTITIES = frozenset({"id", "type", "idPattern", "q", "scopeQ", "attrs"}) | _DISTRIBUTED
APPEND_ATTRS = _ONE | {"options"}
UPDATE_ATTRS = _ONE | {"options"}
PATCH_ATTR = _ONE | {"lang", "observedAt"}
REPLACE_ATTR = _ONE | {"lang"}
DELETE_ATTR = _ONE | {"datasetId", "deleteAll", "lang"}
BATCH_WRITE = _DISTRIBUTED | {"options"}
BATCH_QUERY = _REPRESENTATION | _PAGING | _DISTRIBUTED
DISCOVERY = frozenset({"details", "type"}) | _PAGING | _DISTRIBUTED
DISCOVERY_ONE = _DISTRIBUTED
TEMPORAL = frozenset(
    {"timerel", "timeAt", "endTimeAt", "timeproperty", "lastN"}
    | {"aggrMethods", "aggrPeriodDuration"}
)
QUERY_TEMPORAL = QUERY_ENTITIES | TEMPORAL
RETRIEVE_TEMPORAL = RETRIEVE_ENTITY | TEMPORAL
QUERY_TEMPORAL_VIA_POST = BATCH_QUERY | TEMPORAL
TEMPORAL_WRITE = _ONE | {"datasetId", "deleteAll", "options"}
SUBSCRIPTIONS = _PAGING | _DISTRIBUTED | {"options", "format"}
SUBSCRIPTION_ONE = _DISTRIBUTED | {"options", "format"}
# Context source discovery (§6.8.3.2): entity and attribute filters, q and csf on the
# registrations' properties, geo and temporal queries on their geometries and intervals.
REGISTRATIONS = (
    frozenset({"id", "type", "idPattern", "attrs", "q", "csf"})
    | {"georel", "geometry", "coordinates", "geoproperty"}
    | {"timeproperty", "timerel", "timeAt", "endTimeAt"}
    | _PAGING
    | _DISTRIBUTED
    | {"options"}
)
REGISTRATION_ONE = _DISTRIBUTED | {"options"}
CONTEXTS = frozenset({"details", "kind", "reload"})


def check_params(request: Request, allowed: frozenset[str]) -> None:
    """§6.3.20: 400 InvalidRequest for a query parameter the operation does not define."""
    if not request.scope.get("query_string"):
        return
    unknown = sorted({name for name in request.query_params if name not in allowed})
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} for this operation: "
            + ", ".join(unknown)
        )


__all__ = ["check_params"]
