"""A parsed ``orderBy`` (``cidade.ngsild.query.order``) as PostgreSQL ``ORDER BY`` terms.

``order_postgres(keys, doc)`` gives the ``LATERAL`` sub-selects to join to the entities ``e``
(one per key, each fenced with ``OFFSET 0`` so that it runs once per entity and is not pasted
into every use) and the ``ORDER BY`` terms over their columns. The rules are those of the module
doc of ``order``, written with the structure of ``order.sort_value`` and of the SQLite twin
(store/sqlite/order.py); tests/hub/test_order_property.py holds all three together:

* per key, ``(rank, number, text, time)``: the rank of the data type (§4.23.2), then the value in
  the one column its type uses (the others NULL, equal to each other);
* strings ``COLLATE "und-x-icu"``, ICU's root collation (§4.23.1), or a collation of the tag
  asked for, made once in the store's schema (``collation_sql``); deterministic: strings equal
  under it order by their bytes;
* null and no value last in both directions.

Nothing is bound: the SQL holds only literals of the parsed names, quoted.
"""

from __future__ import annotations

import hashlib

from cidade.ngsild.query.order import (
    ABSENT,
    ARRAY,
    BOOLEAN,
    DATETIME_MEMBERS,
    NULL,
    NUMBER,
    OBJECT,
    STRING,
    TEMPORAL_RANK,
    TEMPORAL_TYPES,
    OrderKey,
)
from cidade.ngsild.query.q import VALUE_MEMBERS
from cidade.store.postgres.q import _lit, _temporal_sql

COLLATION = '"und-x-icu"'


def _keys(keys: tuple[str, ...]) -> str:
    return "".join(f" -> {_lit(k)}" for k in keys)


def _columns(alias: str, v: str, opaque: str, temporal_kind: str) -> str:
    """The sort columns of a jsonb value ``v`` (NULL: no value): a sub-select naming them.
    ``opaque`` (SQL boolean): a JsonProperty's json, never a typed literal; ``temporal_kind``:
    SQL text naming the kind of a temporal value there (NULL when not)."""
    kinds = " ".join(f"WHEN {_lit(form)} THEN {_lit(k)}" for form, k in TEMPORAL_TYPES.items())
    text = f"{alias}b.u #>> '{{}}'"
    normalize = " ".join(f"WHEN {_lit(k)} THEN {_temporal_sql(k, text)}" for k in TEMPORAL_RANK)
    ranks = " ".join(f"WHEN {_lit(k)} THEN {r}" for k, r in TEMPORAL_RANK.items())
    u = f"{alias}b.u"
    t = f"jsonb_typeof({u})"
    return (
        f"(SELECT CASE WHEN {alias}c.tv IS NOT NULL THEN CASE {alias}b.k {ranks} END"
        f" WHEN {u} IS NULL THEN {ABSENT} WHEN {t} = 'null' THEN {NULL}"
        f" WHEN {t} = 'number' THEN {NUMBER} WHEN {t} = 'string' THEN {STRING}"
        f" WHEN {t} = 'object' THEN {OBJECT} WHEN {t} = 'array' THEN {ARRAY}"
        f" ELSE {BOOLEAN} END AS rank,"
        f" CASE WHEN {alias}c.tv IS NULL THEN CASE {t} WHEN 'number' THEN ({u} #>> '{{}}')::numeric"
        f" WHEN 'boolean' THEN CASE WHEN {u} = 'true'::jsonb THEN 1 ELSE 0 END END END AS num,"
        f" CASE WHEN {alias}c.tv IS NULL AND {t} = 'string' THEN {u} #>> '{{}}' END AS str,"
        f" {alias}c.tv AS tv"
        # a: the value; b: the typed literal's value and its temporal kind, if it is one
        f" FROM (SELECT {v} AS v OFFSET 0) AS {alias}a,"
        f" LATERAL (SELECT CASE WHEN {alias}l.lit THEN {alias}a.v -> '@value' ELSE {alias}a.v END"
        f" AS u, CASE WHEN {alias}l.lit THEN CASE {alias}a.v ->> '@type' {kinds} END"
        f" ELSE {temporal_kind} END AS k"
        f" FROM (SELECT NOT ({opaque}) AND jsonb_typeof({alias}a.v) = 'object'"
        f" AND {alias}a.v ? '@value' AS lit OFFSET 0) AS {alias}l OFFSET 0) AS {alias}b,"
        f" LATERAL (SELECT CASE WHEN jsonb_typeof({u}) = 'string' THEN CASE {alias}b.k {normalize}"
        f" END END AS tv OFFSET 0) AS {alias}c)"
    )


def _attribute(doc: str, alias: str, key: OrderKey) -> str:
    path = key.path
    assert path is not None
    instance = (
        f"(SELECT x.i FROM jsonb_array_elements(CASE WHEN jsonb_typeof({doc} -> 'attrs' ->"
        f" {_lit(path.attr)}) = 'array' THEN {doc} -> 'attrs' -> {_lit(path.attr)} END)"
        " WITH ORDINALITY AS x(i, n) ORDER BY x.i ? 'datasetId', x.n LIMIT 1)"
    )
    node = f"{alias}n.node"
    walked = f"{alias}w.node"
    if path.meta is not None:
        value = f"{node} -> {_lit(path.meta)}{_keys(path.keys)}"
        opaque = "true"
        kind = "'DateTime'" if path.meta in DATETIME_MEMBERS else "NULL::text"
        member_sql = "NULL::text"
    else:
        member_sql = (
            "CASE "
            + " ".join(f"WHEN {walked} ? {_lit(m)} THEN {_lit(m)}" for m, _ in VALUE_MEMBERS)
            + " END"
        )
        value = f"{node} -> {alias}n.m{_keys(path.keys)}"
        opaque = f"{alias}n.m = 'json'"
        kind = "NULL::text"
    walk = f"{alias}i.i" + _keys(path.subs)
    return (
        f"LEFT JOIN LATERAL (SELECT o.* FROM (SELECT {instance} AS i OFFSET 0) AS {alias}i,"
        f" LATERAL (SELECT CASE WHEN jsonb_typeof({walk}) = 'object' THEN {walk} END AS node"
        f" OFFSET 0) AS {alias}w,"
        f" LATERAL (SELECT {walked} AS node, {member_sql} AS m OFFSET 0) AS {alias}n,"
        f" LATERAL {_columns(alias, value, opaque, kind)} AS o) AS {alias} ON true"
    )


def _member(doc: str, alias: str, member: str) -> str:
    value = f"{doc} -> {_lit(member)}"
    if member in ("type", "scope"):
        # Shown as a string when there is one, as an array when there are several.
        value = (
            f"CASE WHEN jsonb_typeof({value}) = 'array' AND jsonb_array_length({value}) = 1"
            f" THEN {value} -> 0 ELSE {value} END"
        )
    kind = "'DateTime'" if member in DATETIME_MEMBERS else "NULL::text"
    return f"LEFT JOIN LATERAL {_columns(alias, value, 'false', kind)} AS {alias} ON true"


def collation_name(tag: str | None) -> str:
    """The quoted name of the collation strings order by: ICU's root one, or for a tag
    (order.parse_collation) one the store makes in its schema (``collation_sql``)."""
    if tag is None:
        return COLLATION
    return '"ngsi_order_' + hashlib.sha256(tag.encode()).hexdigest()[:24] + '"'


def collation_sql(tag: str) -> str:
    """The statement that makes the collation of a tag (order.parse_collation: letters, digits
    and '-' only), deterministic as the root one is."""
    return f"CREATE COLLATION IF NOT EXISTS {collation_name(tag)} (provider = icu, locale = {_lit(tag)})"


def order_postgres(
    keys: tuple[OrderKey, ...], doc: str, collation: str | None = None
) -> tuple[list[str], list[str]]:
    """(joins, terms): the LATERAL joins that compute each key's sort columns from ``doc``, and
    the ORDER BY terms over them (the caller adds its own last term, a unique one); strings by
    the ICU collation ``collation`` (None: the root collation), which must exist
    (``collation_sql``)."""
    collate = collation_name(collation)
    joins: list[str] = []
    terms: list[str] = []
    for n, key in enumerate(keys):
        alias = f"ok{n}"
        if key.member is not None:
            joins.append(_member(doc, alias, key.member))
        else:
            joins.append(_attribute(doc, alias, key))
        direction = " DESC" if key.descending else ""
        rank = f"{alias}.rank"
        terms.append(f"CASE WHEN {rank} >= {NULL} THEN {rank} ELSE 0 END")
        terms.append(rank + direction)
        terms.append(f"{alias}.num" + direction)
        terms.append(f"{alias}.str COLLATE {collate}" + direction)
        terms.append(f"{alias}.tv" + direction)
    return joins, terms


__all__ = ["COLLATION", "collation_name", "collation_sql", "order_postgres"]
