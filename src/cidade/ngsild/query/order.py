"""Entity ordering (ETSI GS CIM 009 v1.9.1 §4.23, the ``orderBy`` parameter; §5.2.43
OrderingParams): parser -> tree; the reference ordering in Python.

``parse_order_by`` turns ``orderBy`` (``name,age;desc``, or the list of a Query body's
``ordering.orderBy``) into a tuple of ``OrderKey``; each store compiles that tuple into its SQL
``ORDER BY`` (store/sqlite/order.py, store/postgres/order.py), so that ``limit`` and ``offset``
page through the ordered result. ``sort_entities`` is the same order in Python: the tests hold
both stores to it.

Syntax (§4.23.3)::

    orderBy   = key *("," key)
    key       = target [";" direction]
    direction = "asc" / "desc" / "dist-asc" / "dist-desc"   ; asc when not given
    target    = "id" / "type" / "scope" / "createdAt" / "modifiedAt"   ; entity members
              / path                                         ; an attribute path as in q (§4.9)

A path is q's (``cidade.ngsild.query.q``): an attribute name, then sub-attribute names
(``name.subProperty``), the last name possibly an instance member (``name.observedAt``,
``name.createdAt``, ``name.unitCode`` ...), then a bracket path into the value
(``address[city]``). Names are expanded with the caller's ``expand``. ``dist-asc`` and
``dist-desc`` (order by distance, with ``orderFrom``) are not implemented: 501. Anything else
malformed is 400 BadRequestData.

``collation`` (§4.23.3, RFC 6067): a BCP 47 language tag naming an ICU collation
(``de-u-co-phonebk``, ``und-u-kn``, ``sv``); strings then order by it instead of the root
collation. ``parse_collation`` takes the tags ICU reads whole (its canonical form is the tag
itself, letter case aside), so that both stores, built on the same ICU, read it alike.

Semantics (what the SQL of both stores does, and ``sort_entities``):

* The value of an entity for a key: ``id``; ``type`` and ``scope`` as the entity shows them (one
  type or scope: that string, the expanded type IRI; several: an array); ``createdAt`` and
  ``modifiedAt``: DateTimes. For an attribute: its default instance (the one without a
  datasetId), else its first instance; then the path's sub-attributes, instance member or value
  member (``value``, ``object``, ``languageMap``, ``vocab``, ``valueList``, ``objectList``,
  ``json``: the target value or target object of §4.23.1), then the bracket keys through JSON
  objects. A JSON-LD typed literal ``{"@type": ..., "@value": v}`` counts as ``v`` (not inside a
  JsonProperty, whose JSON is opaque).
* Data types (§4.23.2) rank Numbers < Strings < Objects < Arrays < Booleans < Times < Dates <
  DateTimes < null < no value. A Time, Date or DateTime is a typed literal of that ``@type``
  (``DateTime``, ``ngsi-ld:DateTime`` or its IRI) whose value is one, or an instance member
  observedAt, createdAt or modifiedAt, or the entity's createdAt and modifiedAt; other strings are
  Strings. Within a type: numbers by value, false before true, strings by ICU's root collation
  ("und-x-icu", §4.23.1) or the ``collation`` asked for (equal under it: by code point, as
  PostgreSQL's deterministic collations do), temporal values in time (UTC). Objects and arrays
  are not ordered among themselves.
* ``desc`` reverses that order, except that null and no value stay last ("null values last"),
  null before no value, in both directions.
* Keys apply in turn; entities equal on every key keep the store's order (the order they were
  created in), so pages do not overlap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cmp_to_key, lru_cache
from typing import Any

import icu

from cidade.ngsild.errors import BadRequestData, NotImplementedFeature
from cidade.ngsild.query.q import (
    KIND_JSON,
    META_MEMBERS,
    VALUE_MEMBERS,
    Path,
    _Parser,
    render_path,
    temporal,
)

MAX_LENGTH = 2_000
MAX_KEYS = 16

# The entity members a key may name instead of an attribute (§6.4.3.2 orderBy; createdAt and
# modifiedAt are the entity's system attributes, §4.8).
ENTITY_MEMBERS = ("id", "type", "scope", "createdAt", "modifiedAt")
DIRECTIONS = ("asc", "desc")
DISTANCE_DIRECTIONS = ("dist-asc", "dist-desc")

# §4.23.2 datatype comparison order.
NUMBER, STRING, OBJECT, ARRAY, BOOLEAN, TIME, DATE, DATETIME, NULL, ABSENT = range(10)
TEMPORAL_RANK = {"Time": TIME, "Date": DATE, "DateTime": DATETIME}
# The @type of a typed literal that makes it a Time, Date or DateTime.
TEMPORAL_TYPES = {
    form: kind
    for kind in ("DateTime", "Date", "Time")
    for form in (kind, f"ngsi-ld:{kind}", f"https://uri.etsi.org/ngsi-ld/{kind}")
}
# Instance members that hold a DateTime.
DATETIME_MEMBERS = frozenset({"observedAt", "createdAt", "modifiedAt"})

MAX_COLLATION = 100
_TAG = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


@lru_cache(maxsize=64)
def collator(tag: str | None = None) -> Any:
    """The ICU collator of a tag (``parse_collation``), ICU's root collation for None (§4.23.1).
    A collator is never changed once made; PyICU keeps the GIL while it works, so one serves
    every thread."""
    locale = icu.Locale.getRoot() if tag is None else icu.Locale.forLanguageTag(tag)
    return icu.Collator.createInstance(locale)


def collation_key(text: str, tag: str | None = None) -> bytes:
    """The sort key of ``text`` under a collation (None: ICU's root collation): bytes that
    compare as the collation does."""
    return bytes(collator(tag).getSortKey(text))


def parse_collation(value: object) -> str:
    """``collation``: a BCP 47 tag that ICU reads whole (RFC 6067 keywords included), in its
    canonical form; 400 BadRequestData for anything else."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_COLLATION:
        raise BadRequestData("collation must be a BCP 47 language tag (RFC 6067)")
    if _TAG.fullmatch(value) is None:
        raise BadRequestData(f"collation {value!r} is not a BCP 47 language tag")
    try:
        canonical = icu.Locale.forLanguageTag(value).toLanguageTag()
    except icu.ICUError:
        canonical = ""
    if canonical.lower() != value.lower():
        raise BadRequestData(f"collation {value!r} is not a BCP 47 language tag ICU reads whole")
    return canonical


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One key: an entity ``member`` (one of ENTITY_MEMBERS) or an attribute ``path``."""

    member: str | None = None
    path: Path | None = None
    descending: bool = False


OrderBy = tuple[OrderKey, ...]


class _OrderParser(_Parser):
    """q's parser, reused for its attribute paths; errors name orderBy."""

    def fail(self, message: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        near = self.text[max(0, at - 15) : at + 15]
        return BadRequestData(f"invalid orderBy at position {at}: {message} (near {near!r})")

    def parse_keys(self) -> list[OrderKey]:
        keys = [self.parse_key_term()]
        while self.peek() == ",":
            self.pos += 1
            keys.append(self.parse_key_term())
        if self.pos < self.n:
            raise self.fail(f"expected ',', ';' or the end of orderBy, found {self.peek()!r}")
        return keys

    def parse_key_term(self) -> OrderKey:
        if not self.peek():
            raise self.fail("expected an attribute name or id, type, scope, createdAt")
        member = next(
            (
                m
                for m in ENTITY_MEMBERS
                if self.text.startswith(m, self.pos)
                and self.text[self.pos + len(m) : self.pos + len(m) + 1] in ("", ",", ";")
            ),
            None,
        )
        if member is not None:
            self.pos += len(member)
            path = None
        else:
            path = self.parse_path()
        descending = False
        if self.peek() == ";":
            self.pos += 1
            start = self.pos
            while self.pos < self.n and self.text[self.pos] != ",":
                self.pos += 1
            direction = self.text[start : self.pos]
            if direction in DISTANCE_DIRECTIONS:
                raise NotImplementedFeature(
                    f"orderBy {direction} (ordering by distance) is not supported"
                )
            if direction not in DIRECTIONS:
                raise self.fail(
                    f"unknown direction {direction!r}: asc, desc, dist-asc or dist-desc", start
                )
            descending = direction == "desc"
        return OrderKey(member, path, descending)


def parse_order_by(value: object, expand: Callable[[str], str]) -> OrderBy:
    """``orderBy`` as a query parameter (a string) or as OrderingParams' ``orderBy`` (an array of
    strings, each one or more keys); attribute names are expanded with ``expand``. Raises
    BadRequestData when it is malformed, NotImplementedFeature for order by distance."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = value
    else:
        raise BadRequestData("orderBy must be a string or a non-empty array of strings")
    keys: list[OrderKey] = []
    for text in texts:
        if not text:
            raise BadRequestData("invalid orderBy: it is empty")
        if len(text) > MAX_LENGTH:
            raise BadRequestData(f"invalid orderBy: longer than {MAX_LENGTH} characters")
        keys.extend(_OrderParser(text, expand, frozenset(), expand).parse_keys())
    if len(keys) > MAX_KEYS:
        raise BadRequestData(f"invalid orderBy: more than {MAX_KEYS} keys")
    return tuple(keys)


def render_order_by(keys: OrderBy) -> str:
    """The keys as ``orderBy`` text (names as they were parsed); ``parse_order_by`` reads it
    back equal."""
    out = []
    for key in keys:
        text = key.member if key.member is not None else render_path(key.path)  # type: ignore[arg-type]
        out.append(text + (";desc" if key.descending else ""))
    return ",".join(out)


# -- the reference ordering ---------------------------------------------------------------------


def chosen_instance(instances: object) -> dict | None:
    """The instance of an attribute that ordering looks at: the default one, else the first."""
    if not isinstance(instances, list) or not instances:
        return None
    for inst in instances:
        if isinstance(inst, dict) and "datasetId" not in inst:
            return inst
    first = instances[0]
    return first if isinstance(first, dict) else None


def _classify(value: Any, temporal_kind: str | None, tag: str | None = None) -> tuple[int, Any]:
    if temporal_kind is not None:
        text = temporal(temporal_kind, value)
        if text is not None:
            return TEMPORAL_RANK[temporal_kind], text
    if value is None:
        return NULL, None
    if isinstance(value, bool):
        return BOOLEAN, value
    if isinstance(value, int | float):
        return NUMBER, value
    if isinstance(value, str):
        return STRING, (collation_key(value, tag), value.encode())
    if isinstance(value, dict):
        return OBJECT, None
    return ARRAY, None


def _shown(values: list[str], tag: str | None) -> tuple[int, Any]:
    """A member the entity shows as one string, or as an array when it has several."""
    if len(values) == 1:
        return _classify(values[0], None, tag)
    return ARRAY, None


def sort_value(entity: dict, key: OrderKey, tag: str | None = None) -> tuple[int, Any]:
    """(rank, value) of an entity (stored form) for one key: the rank of its data type
    (NUMBER ... ABSENT), and a value that orders entities of that rank (strings by the
    collation ``tag``, None: the root collation)."""
    if key.member is not None:
        if key.member not in entity:
            return ABSENT, None
        value = entity[key.member]
        if key.member in ("type", "scope"):
            return _shown(value, tag) if isinstance(value, list) else _classify(value, None, tag)
        return _classify(value, "DateTime" if key.member in DATETIME_MEMBERS else None, tag)
    path = key.path
    assert path is not None
    attrs = entity.get("attrs")
    node = chosen_instance(attrs.get(path.attr) if isinstance(attrs, dict) else None)
    for sub in path.subs:
        if node is None:
            break
        node = node.get(sub)
        if not isinstance(node, dict):
            node = None
    if node is None:
        return ABSENT, None
    opaque = False  # a JsonProperty's json, or an instance member: never a typed literal
    if path.meta is not None:
        if path.meta not in node:
            return ABSENT, None
        target = node[path.meta]
        opaque = True
    else:
        for member, kind in VALUE_MEMBERS:
            if member in node:
                target = node[member]
                opaque = kind == KIND_JSON
                break
        else:
            return ABSENT, None
    for k in path.keys:
        if not isinstance(target, dict) or k not in target:
            return ABSENT, None
        target = target[k]
    temporal_kind = "DateTime" if path.meta in DATETIME_MEMBERS else None
    if not opaque and isinstance(target, dict) and "@value" in target:
        literal_type = target.get("@type")
        temporal_kind = TEMPORAL_TYPES.get(literal_type) if isinstance(literal_type, str) else None
        target = target["@value"]
    return _classify(target, temporal_kind, tag)


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return 0
    return -1 if a < b else (1 if a > b else 0)


def compare_values(a: tuple[int, Any], b: tuple[int, Any], descending: bool) -> int:
    """How two (rank, value) of one key order: <0, 0 or >0."""
    (ra, va), (rb, vb) = a, b
    last_a, last_b = (ra if ra >= NULL else 0), (rb if rb >= NULL else 0)
    if last_a != last_b:
        return -1 if last_a < last_b else 1
    c = _compare(ra, rb) or (_compare(va, vb) if ra == rb else 0)
    return -c if descending else c


def sort_entities(
    entities: Iterable[dict], keys: Sequence[OrderKey], collation: str | None = None
) -> list[dict]:
    """The entities in the order ``keys`` give, strings by ``collation`` (None: ICU's root
    collation); stable: equal ones keep their order."""
    listed = list(entities)
    values = {id(e): [sort_value(e, k, collation) for k in keys] for e in listed}

    def cmp(a: dict, b: dict) -> int:
        for n, key in enumerate(keys):
            c = compare_values(values[id(a)][n], values[id(b)][n], key.descending)
            if c:
                return c
        return 0

    return sorted(listed, key=cmp_to_key(cmp))


__all__ = [
    "ABSENT",
    "DATETIME_MEMBERS",
    "ENTITY_MEMBERS",
    "META_MEMBERS",
    "NULL",
    "TEMPORAL_TYPES",
    "OrderBy",
    "OrderKey",
    "chosen_instance",
    "collation_key",
    "collator",
    "compare_values",
    "parse_collation",
    "parse_order_by",
    "render_order_by",
    "sort_entities",
    "sort_value",
]
