"""Checks of the members the NGSI-LD data types share, client form -> stored form: the id and
type of a new one, entity selectors (a Subscription's EntitySelector and a registration's
EntityInfo, §5.2.8), lists of attribute names, lists of KeyValuePair, positive and non-negative
numbers. The Subscription (subscriptions.py) and the CSourceRegistration (registrations.py)
build on them.

Each raises 400 BadRequestData naming the offending member (``what``); the callers choose the
words that differ between the data types.

Pure (no I/O).
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeGuard

from cidade.hub.model import NULL, Terms, expand_name, is_uri
from cidade.ngsild.errors import BadRequestData

# The members of an EntitySelector and of an EntityInfo.
SELECTOR_MEMBERS = frozenset({"id", "idPattern", "type"})


def short(value: object) -> str:
    """``value`` as a message shows it: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def id_and_type(body: dict[str, Any], given: str | None, type_: str, noun: str) -> str:
    """The id of a new resource of type ``type_`` (a subscription, a registration): the body's,
    else ``given``, else a new urn:ngsi-ld:<type>:<uuid>; a URI. The body's type must be
    ``type_``."""
    rid = body.get("id", given)
    if rid is None:
        rid = f"urn:ngsi-ld:{type_}:{uuid.uuid4()}"
    elif not is_uri(rid):
        raise BadRequestData(f"the {noun} id must be a URI, got {short(rid)}")
    if body.get("type") != type_:
        raise BadRequestData(f"the {noun} type must be {type_!r}, got {short(body.get('type'))}")
    return rid


def object_with(
    value: object, allowed: frozenset[str], what: str, expected: str = "an object"
) -> dict[str, Any]:
    """``value`` as a JSON object of no members but ``allowed``: else 400 saying it must be
    ``expected``, or naming the first unknown member."""
    if not isinstance(value, dict):
        raise BadRequestData(f"{what} must be {expected}")
    for key in value:
        if key not in allowed:
            raise BadRequestData(f"unknown member {key!r} in {what}")
    return value


def _number(value: object) -> TypeGuard[int | float]:
    # bool is an int in Python, but true is not a number of seconds.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def positive(value: object, what: str) -> int | float:
    """A finite number above 0 (seconds, a timeout ...)."""
    if not _number(value) or value <= 0:
        raise BadRequestData(f"{what} must be a positive number, got {short(value)}")
    return value


def non_negative(value: object, what: str) -> int | float:
    """A finite number, 0 or above."""
    if not _number(value) or value < 0:
        raise BadRequestData(f"{what} must be a non-negative number, got {short(value)}")
    return value


def attribute_names(value: object, terms: Terms, what: str) -> list[str]:
    """A non-empty array of attribute names, each expanded to its IRI, repeats dropped."""
    if not isinstance(value, list) or not value:
        raise BadRequestData(f"{what} must be a non-empty array of attribute names")
    out: list[str] = []
    for name in value:
        iri = expand_name(name, terms, f"attribute name in {what}")
        if iri not in out:
            out.append(iri)
    return out


def entity_selectors(
    value: object,
    what: str,
    *,
    kind: str,
    item: str,
    entity_type: Callable[[object, str], str],
) -> list[dict[str, str]]:
    """A non-empty array of entity selectors ({id?, idPattern?, type}): id a URI, idPattern a
    regular expression, ``type`` stored as ``entity_type(type, where)`` makes it (an expanded
    type, or a type expression). ``kind`` names the array's items in its message
    (EntitySelectors, EntityInfo), ``item`` one item ("an object")."""
    if not isinstance(value, list) or not value:
        raise BadRequestData(f"{what} must be a non-empty array of {kind}")
    out = []
    for i, selector in enumerate(value):
        where = f"{what}[{i}]"
        selector = object_with(selector, SELECTOR_MEMBERS, where, item)
        if "type" not in selector:
            raise BadRequestData(f"{where} needs a type")
        stored: dict[str, str] = {}
        if "id" in selector:
            if not is_uri(selector["id"]):
                raise BadRequestData(f"{where}.id must be a URI, got {short(selector['id'])}")
            stored["id"] = selector["id"]
        if "idPattern" in selector:
            stored["idPattern"] = _id_pattern(selector["idPattern"], f"{where}.idPattern")
        stored["type"] = entity_type(selector["type"], where)
        out.append(stored)
    return out


def _id_pattern(pattern: object, what: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise BadRequestData(f"{what} must be a non-empty string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise BadRequestData(
            f"{what} {pattern!r} is not a valid regular expression: {exc}"
        ) from None
    return pattern


def key_values(value: object, what: str) -> list[dict[str, str]]:
    """A non-empty array of KeyValuePair: {"key": non-empty string, "value": string}."""
    if not isinstance(value, list) or not value:
        raise BadRequestData(f"{what} must be a non-empty array of {{key, value}} objects")
    out = []
    for pair in value:
        if (
            not isinstance(pair, dict)
            or set(pair) != {"key", "value"}
            or not isinstance(pair["key"], str)
            or not pair["key"]
            or not isinstance(pair["value"], str)
        ):
            raise BadRequestData(
                f'{what} items must be {{"key": string, "value": string}}, got {short(pair)}'
            )
        out.append({"key": pair["key"], "value": pair["value"]})
    return out


__all__ = [
    "SELECTOR_MEMBERS",
    "attribute_names",
    "entity_selectors",
    "id_and_type",
    "key_values",
    "non_negative",
    "object_with",
    "positive",
    "short",
]


@functools.lru_cache(maxsize=4096)
def compiled_pattern(pattern: str) -> re.Pattern[str]:
    """An idPattern as a regular expression (checked when it was stored), compiled once."""
    return re.compile(pattern)


def deletes_member(value: object) -> bool:
    """Whether a member's value in an update fragment removes it: null, or the NGSI-LD Null."""
    return value is None or value == NULL
