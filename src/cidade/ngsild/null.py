"""The NGSI-LD Null ("urn:ngsi-ld:null", ETSI GS CIM 009 v1.8) as each attribute type writes
it: what a merge-patch sends to delete an attribute, and what a temporal representation shows
in the instance that records an attribute's deletion (with its deletedAt)."""

from __future__ import annotations

from typing import Any

NULL = "urn:ngsi-ld:null"

# The value member of each attribute type and the NGSI-LD Null in it.
_NULL_VALUES: dict[str, tuple[str, Any]] = {
    "Property": ("value", NULL),
    "GeoProperty": ("value", NULL),
    "Relationship": ("object", NULL),
    "LanguageProperty": ("languageMap", {"@none": NULL}),
    "VocabProperty": ("vocab", NULL),
    "ListProperty": ("valueList", [NULL]),
    "ListRelationship": ("objectList", [NULL]),
    "JsonProperty": ("json", NULL),
}


def null_value(kind: str) -> tuple[str, Any]:
    """(value member, the NGSI-LD Null in it) for an attribute type (a Property's for any
    other); a new object each time, since callers put it in documents."""
    member, value = _NULL_VALUES.get(kind, _NULL_VALUES["Property"])
    if isinstance(value, dict):
        return member, dict(value)
    if isinstance(value, list):
        return member, list(value)
    return member, value


# A ListRelationship's objectList holds relationship objects as well as plain ids.
_ALSO_NULL: dict[str, Any] = {"ListRelationship": [{"object": NULL}]}


def is_null(kind: str, value: object) -> bool:
    """Whether ``value``, the value member of an attribute of type ``kind``, is the NGSI-LD
    Null (for a kind the table does not know, a Property's)."""
    _, null = _NULL_VALUES.get(kind, _NULL_VALUES["Property"])
    return value == null or (kind in _ALSO_NULL and value == _ALSO_NULL[kind])
