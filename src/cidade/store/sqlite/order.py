"""A parsed ``orderBy`` (``cidade.ngsild.query.order``) as SQLite ``ORDER BY`` terms.

``order_sqlite(keys, doc)`` gives, for a query over entities ``e`` (``doc`` their JSON column),
three levels of columns to compute once per matching entity (the chosen instance of each
attribute key as JSON text; its target's json_type and value; the typed literal unwrapped) and
the ``ORDER BY`` terms over the last. The store materializes each level (``MATERIALIZED`` CTEs,
so that each JSON lookup runs once per entity, not once per use) and sorts in SQL, so ``LIMIT``
and ``OFFSET`` page through the ordered result. The rules are those of the module doc of ``order``, written in SQL with the
structure of ``order.sort_value`` (tests/hub/test_order_property.py holds the two to that):

* per key, ``(rank, number, collation key, text, time)``: the rank of the data type (§4.23.2),
  then the value in the one column its type uses (the others are NULL, equal to each other);
* strings by ``ngsi_collation_key`` (ICU sort keys of the root collation or of the one asked
  for, compared as bytes), then by the text itself (code points), as PostgreSQL's deterministic
  ICU collations do;
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


def _collation_key(text: object, tag: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    return collation_key(text, tag if isinstance(tag, str) else None)


def install_order_functions(conn: sqlite3.Connection) -> None:
    """Register the function ``order_sqlite``'s SQL calls (call on every new connection)."""
    conn.create_function("ngsi_collation_key", 2, _collation_key, deterministic=True)


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


def _typed(t: str, v: str, temporal_kind: str, tag: str) -> list[str]:
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
    key = f"ngsi_collation_key({text}, {tag})"
    return [rank, number, key, text, tv]


def _attribute_levels(x: str, n: int, key: OrderKey) -> tuple[str, str]:
    """The SQL of the second and third levels of an attribute key, from ``x{n}``, the chosen
    instance's JSON text: (the raw target's ``rt{n}``, ``rv{n}`` and whether it is opaque,
    ``op{n}``), then (``t{n}``, ``v{n}``, ``k{n}``: the typed literal unwrapped, the temporal
    kind)."""
    path = key.path
    assert path is not None
    base = "$" + "".join(_label(s) for s in path.subs)
    keys = "".join(_label(k) for k in path.keys)
    if path.meta is not None:
        target = _lit(base + _label(path.meta) + keys)
        kind = "'DateTime'" if path.meta in DATETIME_MEMBERS else "NULL"
        second = (
            f"json_type({x}, {target}) AS rt{n}, json_extract({x}, {target}) AS rv{n}, 1 AS op{n}"
        )
        return second, f"rt{n} AS t{n}, rv{n} AS v{n}, {kind} AS k{n}"
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
    second = (
        f"json_type({x}, {member}) AS rt{n}, json_extract({x}, {member}) AS rv{n},"
        f" ({opaque}) AS op{n}"
    )
    t, v = f"rt{n}", f"rv{n}"
    # A typed literal: an object with @value (v is JSON text only when t is 'object'; CASE
    # keeps the JSON functions from reading a plain string as JSON).
    literal = (
        f"(CASE WHEN {t} = 'object' THEN NOT op{n}"
        f" AND json_type({v}, '$.\"@value\"') IS NOT NULL ELSE 0 END)"
    )
    kinds = " ".join(f"WHEN {_lit(form)} THEN {_lit(k)}" for form, k in TEMPORAL_TYPES.items())
    third = (
        f"CASE WHEN {literal} THEN json_type({v}, '$.\"@value\"') ELSE {t} END AS t{n},"
        f" CASE WHEN {literal} THEN json_extract({v}, '$.\"@value\"') ELSE {v} END AS v{n},"
        f" CASE WHEN {literal} THEN CASE WHEN json_type({v}, '$.\"@type\"') = 'text'"
        f" THEN CASE json_extract({v}, '$.\"@type\"') {kinds} END END END AS k{n}"
    )
    return second, third


def _member_level(doc: str, n: int, member: str) -> str:
    """``t{n}``, ``v{n}``, ``k{n}`` of an entity member, from the entity's ``doc``."""
    label = _lit("$" + _label(member))
    t, v = f"json_type({doc}, {label})", f"json_extract({doc}, {label})"
    if member in ("type", "scope"):
        # Shown as a string when there is one, as an array when there are several.
        one = _lit("$" + _label(member) + "[0]")
        single = f"({t} = 'array' AND json_array_length({doc}, {label}) = 1)"
        t = f"(CASE WHEN {single} THEN json_type({doc}, {one}) ELSE {t} END)"
        v = f"(CASE WHEN {single} THEN json_extract({doc}, {one}) ELSE {v} END)"
    kind = "'DateTime'" if member in DATETIME_MEMBERS else "NULL"
    return f"{t} AS t{n}, {v} AS v{n}, {kind} AS k{n}"


def order_sqlite(
    keys: tuple[OrderKey, ...], doc: str, collation: str | None = None
) -> tuple[list[list[str]], list[str]]:
    """(levels, terms): the columns of three levels, each computed from the one before (the
    first from the entity's ``doc``), so that every JSON lookup runs once per entity (the store
    materializes each level), and the ORDER BY terms over the third level's columns. The third
    level holds ``t{n}``, ``v{n}``, ``k{n}`` per key: the value's json_type, its SQL value and
    the name of its temporal kind (NULL when it is none). Strings order by the ICU collation
    ``collation`` (order.parse_collation; None: the root collation)."""
    tag = "NULL" if collation is None else _lit(collation)
    levels: list[list[str]] = [[], [], []]
    terms: list[str] = []
    for n, key in enumerate(keys):
        if key.member is not None:
            levels[0].append(_member_level(doc, n, key.member))
            levels[1].append(f"t{n}, v{n}, k{n}")
            levels[2].append(f"t{n}, v{n}, k{n}")
        else:
            assert key.path is not None
            levels[0].append(f"{_instance_sql(doc, key.path.attr)} AS x{n}")
            second, third = _attribute_levels(f"x{n}", n, key)
            levels[1].append(second)
            levels[2].append(third)
        cols = _typed(f"t{n}", f"v{n}", f"k{n}", tag)
        rank = cols[0]
        direction = " DESC" if key.descending else ""
        terms.append(f"CASE WHEN {rank} >= {NULL} THEN {rank} ELSE 0 END")
        terms.extend(c + direction for c in cols)
    return levels, terms


__all__ = ["install_order_functions", "order_sqlite"]
