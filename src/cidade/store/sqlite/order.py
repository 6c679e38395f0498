"""A parsed ``orderBy`` (``cidade.ngsild.query.order``) as SQLite ``ORDER BY`` terms.

``order_sqlite(keys, doc)`` gives, for a query over entities ``e`` (``doc`` their JSON column):
the columns to compute once per matching entity (the chosen instance of each attribute key, as
JSON text, named ``ok0``, ``ok1``, ...) and the ``ORDER BY`` terms over those columns and the
doc. The store materializes the columns (a ``MATERIALIZED`` CTE, so the instance is looked up
once per entity, not once per use) and sorts in SQL, so ``LIMIT`` and ``OFFSET`` page through
the ordered result. The rules are those of the module doc of ``order``, written in SQL with the
structure of ``order.sort_value`` (tests/hub/test_order_property.py holds the two to that):

* per key, ``(rank, number, collation key, text, time)``: the rank of the data type (§4.23.2),
  then the value in the one column its type uses (the others are NULL, equal to each other);
* strings by ``ngsi_collation_key`` (ICU root collation sort keys, compared as bytes), then by
  the text itself (code points), as PostgreSQL's deterministic ICU collation does;
* null and no value last in both directions: a first term ``CASE WHEN rank >= 8 THEN rank ELSE 0
  END`` always ascending.

``install_order_functions`` registers ``ngsi_collation_key`` on a connection.
"""

from __future__ import annotations

import sqlite3

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
    collation_key,
)
from cidade.ngsild.query.q import VALUE_MEMBERS


def _collation_key(text: object) -> bytes | None:
    return collation_key(text) if isinstance(text, str) else None


def install_order_functions(conn: sqlite3.Connection) -> None:
    """Register the function ``order_sqlite``'s SQL calls (call on every new connection)."""
    conn.create_function("ngsi_collation_key", 1, _collation_key, deterministic=True)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _label(key: str) -> str:
    # The q parser refuses names with '"' or '\' (which a quoted JSON path label cannot carry).
    return '."' + key + '"'


def _instance_sql(doc: str, attr: str) -> str:
    """SQL: the JSON text of an attribute's default instance, else its first; NULL if none."""
    return (
        f"(SELECT i.value FROM json_each({doc}, {_lit('$.attrs' + _label(attr))}) AS i"
        " ORDER BY json_type(i.value, '$.datasetId') IS NOT NULL, i.key LIMIT 1)"
    )


def _typed(t: str, v: str, temporal_kind: str) -> list[str]:
    """The five sort columns of a value given as (json_type ``t``, json_extract ``v``);
    ``temporal_kind`` an SQL text expression naming the temporal kind of the value, or NULL."""
    tv = f"(CASE WHEN {t} = 'text' THEN ngsi_temporal({temporal_kind}, {v}) END)"
    ranks = " ".join(f"WHEN {_lit(k)} THEN {r}" for k, r in TEMPORAL_RANK.items())
    rank = (
        f"(CASE WHEN {tv} IS NOT NULL THEN CASE {temporal_kind} {ranks} END"
        f" WHEN {t} IS NULL THEN {ABSENT} WHEN {t} = 'null' THEN {NULL}"
        f" WHEN {t} IN ('integer', 'real') THEN {NUMBER} WHEN {t} = 'text' THEN {STRING}"
        f" WHEN {t} = 'object' THEN {OBJECT} WHEN {t} = 'array' THEN {ARRAY} ELSE {BOOLEAN} END)"
    )
    plain = f"{tv} IS NULL"
    number = f"(CASE WHEN {plain} AND {t} IN ('integer', 'real', 'true', 'false') THEN {v} END)"
    text = f"(CASE WHEN {plain} AND {t} = 'text' THEN {v} END)"
    key = f"ngsi_collation_key({text})"
    return [rank, number, key, text, tv]


def _attribute_columns(x: str, key: OrderKey) -> list[str]:
    """The sort columns of an attribute key, from ``x``, the chosen instance's JSON text."""
    path = key.path
    assert path is not None
    base = "$" + "".join(_label(s) for s in path.subs)
    keys = "".join(_label(k) for k in path.keys)
    if path.meta is not None:
        target = _lit(base + _label(path.meta) + keys)
        t, v = f"json_type({x}, {target})", f"json_extract({x}, {target})"
        kind = "'DateTime'" if path.meta in DATETIME_MEMBERS else "NULL"
        return _typed(t, v, kind)
    # The value member's path (the first of VALUE_MEMBERS the instance has), and whether it is
    # a JsonProperty's (opaque: no typed literal inside).
    member = (
        "(CASE "
        + " ".join(
            f"WHEN json_type({x}, {_lit(base + _label(m))}) IS NOT NULL"
            f" THEN {_lit(base + _label(m) + keys)}"
            for m, _ in VALUE_MEMBERS
        )
        + " END)"
    )
    opaque = f"json_type({x}, {_lit(base + '.json')}) IS NOT NULL AND " + " AND ".join(
        f"json_type({x}, {_lit(base + _label(m))}) IS NULL" for m, _ in VALUE_MEMBERS[:-1]
    )
    t, v = f"json_type({x}, {member})", f"json_extract({x}, {member})"
    # A typed literal: an object with @value (v is JSON text only when t is 'object'; CASE
    # keeps the JSON functions from reading a plain string as JSON).
    literal = (
        f"(CASE WHEN {t} = 'object' THEN NOT ({opaque})"
        f" AND json_type({v}, '$.\"@value\"') IS NOT NULL ELSE 0 END)"
    )
    kinds = " ".join(f"WHEN {_lit(form)} THEN {_lit(k)}" for form, k in TEMPORAL_TYPES.items())
    literal_kind = (
        f"(CASE WHEN {literal} THEN CASE WHEN json_type({v}, '$.\"@type\"') = 'text'"
        f" THEN CASE json_extract({v}, '$.\"@type\"') {kinds} END END END)"
    )
    return _typed(
        f"(CASE WHEN {literal} THEN json_type({v}, '$.\"@value\"') ELSE {t} END)",
        f"(CASE WHEN {literal} THEN json_extract({v}, '$.\"@value\"') ELSE {v} END)",
        literal_kind,
    )


def _member_columns(doc: str, member: str) -> list[str]:
    label = _lit("$" + _label(member))
    t, v = f"json_type({doc}, {label})", f"json_extract({doc}, {label})"
    if member in ("type", "scope"):
        # Shown as a string when there is one, as an array when there are several.
        one = _lit("$" + _label(member) + "[0]")
        single = f"({t} = 'array' AND json_array_length({doc}, {label}) = 1)"
        t = f"(CASE WHEN {single} THEN json_type({doc}, {one}) ELSE {t} END)"
        v = f"(CASE WHEN {single} THEN json_extract({doc}, {one}) ELSE {v} END)"
    kind = "'DateTime'" if member in DATETIME_MEMBERS else "NULL"
    return _typed(t, v, kind)


def order_sqlite(keys: tuple[OrderKey, ...], doc: str) -> tuple[list[str], list[str]]:
    """(columns, terms): SQL computing ``ok0``, ``ok1``, ... (one per attribute key) from the
    entity's ``doc``, and the ORDER BY terms over the materialized ``doc`` and those columns."""
    columns: list[str] = []
    terms: list[str] = []
    for n, key in enumerate(keys):
        if key.member is not None:
            cols = _member_columns("doc", key.member)
        else:
            assert key.path is not None
            columns.append(f"{_instance_sql(doc, key.path.attr)} AS ok{n}")
            cols = _attribute_columns(f"ok{n}", key)
        rank = cols[0]
        direction = " DESC" if key.descending else ""
        terms.append(f"CASE WHEN {rank} >= {NULL} THEN {rank} ELSE 0 END")
        terms.extend(c + direction for c in cols)
    return columns, terms


__all__ = ["install_order_functions", "order_sqlite"]
