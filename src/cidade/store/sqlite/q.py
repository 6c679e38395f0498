"""A parsed ``q`` (``cidade.ngsild.query.q``) as an SQLite WHERE fragment over the stored form.

``to_sqlite(node, doc_column)`` returns SQL with ``?`` placeholders and its parameters. The
fragment selects exactly the entities that ``q.evaluate`` accepts (the property tests in
tests/hub/test_q_property.py hold the two to that); every rule of the module doc of ``q`` is
written twice, once in Python there and once in SQL here, with the same structure:

* one ``EXISTS`` over the instances of the attribute (``json_each(doc, '$."attrs"."<iri>"')``);
* inside it, a sub-select picks the instance's value member (its JSON path and class) in the
  order of ``q.VALUE_MEMBERS``, so the predicate is written once per term;
* the candidates (array elements, typed literals unwrapped, or languageMap strings) come from a
  sub-select producing ``(v, t)`` = (SQL value, ``json_type``), so type discipline is a test on
  ``t`` (``5`` never equals ``"5"``; JSON ``true`` is the integer 1 in SQL, but its ``t`` is
  ``'true'``);
* positive operators are "EXISTS (a candidate that matches)"; ``!=`` and ``!~=`` are "the target
  exists AND NOT EXISTS (a candidate that is equal / that is not a string the pattern misses)".

Regular expressions and temporal normalization run in Python: ``install_sqlite_functions``
registers ``regexp(pattern, value)`` and ``ngsi_temporal(kind, value)`` on a connection; the
store calls it on every connection it opens.

Requirements on the stored JSON: SQLite (3.40) matches a path label against the key as it is
written in the JSON text, so keys must be written unescaped — non-ASCII as UTF-8, not ``\\uXXXX``
(orjson does this; ``json.dumps`` needs ``ensure_ascii=False``). The parser refuses IRIs with
``"``, ``\\`` or control characters, which would be escaped in JSON text. In SQLite 3.45 and later
a BLOB argument to the JSON functions is read as JSONB, so the document should be stored as TEXT.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

from cidade.ngsild.query.q import (
    VALUE_MEMBERS,
    And,
    Compare,
    Exists,
    InList,
    NotExists,
    Or,
    Path,
    QNode,
    Range,
    Scalar,
    Temporal,
    Term,
    compile_regex,
    relationship_allowed,
    temporal,
)
from cidade.ngsild.query.scope import ScopeAnd, ScopeNode, ScopeTerm, scope_regex

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KIND_META = "meta"


def _regexp(pattern: object, value: object) -> int:
    """SQLite ``regexp(pattern, value)``: 1 when ``re.search`` finds the pattern in the string.

    Also serves SQL's ``value REGEXP pattern``. Never raises: a non-string or an invalid pattern
    is simply no match (q patterns were compiled at parse time already).
    """
    if not isinstance(pattern, str) or not isinstance(value, str):
        return 0
    try:
        rx = compile_regex(pattern)
    except (re.error, RecursionError, OverflowError, ValueError, MemoryError):
        return 0
    return 1 if rx.search(value) is not None else 0


def install_sqlite_functions(conn: sqlite3.Connection) -> None:
    """Register the functions ``to_sqlite``'s SQL calls (call on every new connection)."""
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    conn.create_function("ngsi_temporal", 2, temporal, deterministic=True)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _label(key: str) -> str:
    # The parser guarantees no '"' or '\' (which a quoted JSON path label cannot carry).
    return '."' + key + '"'


def _param(value: Scalar) -> Any:
    if isinstance(value, Temporal):
        return value.text
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if not _INT64_MIN <= value <= _INT64_MAX:
        return float(value)  # sqlite3 cannot bind it; compare as a float
    return value


class _Builder:
    __slots__ = ("doc", "n", "params")

    def __init__(self, doc: str) -> None:
        self.doc = doc
        self.params: list[Any] = []
        self.n = 0

    def alias(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    # Every method returns SQL text and appends its parameters in text order, so callers must
    # build fragments in the order they appear in the final text.

    def node(self, node: QNode) -> str:
        if isinstance(node, And | Or):
            return self.balanced(node.items, " AND " if isinstance(node, And) else " OR ")
        if isinstance(node, Exists):
            return self.instances(node.path, lambda inst: self.exists_in(node.path, inst))
        if isinstance(node, NotExists):
            return "NOT " + self.instances(node.path, lambda inst: self.exists_in(node.path, inst))
        return self.instances(node.path, lambda inst: self.term_in(node, inst))

    def balanced(self, items: tuple[QNode, ...], joiner: str) -> str:
        # A balanced tree keeps SQLite's expression depth (limit 1000) at log2(terms).
        if len(items) == 1:
            return self.node(items[0])
        mid = len(items) // 2
        left = self.balanced(items[:mid], joiner)
        right = self.balanced(items[mid:], joiner)
        return f"({left}{joiner}{right})"

    def instances(self, path: Path, inner: Callable[[str], str]) -> str:
        attrs = _lit('$."attrs"' + _label(path.attr))
        i = self.alias("i")
        doc = self.doc
        # CASE, not AND: SQLite does not promise to test i.type before parsing i.value as JSON.
        return (
            f"EXISTS (SELECT 1 FROM json_each({doc}, {attrs}) AS {i}"
            f" WHERE json_type({doc}, {attrs}) = 'array'"
            f" AND CASE WHEN {i}.type = 'object' THEN ({inner(i + '.value')}) ELSE 0 END)"
        )

    def exists_in(self, path: Path, inst: str) -> str:
        base = "$" + "".join(_label(s) for s in path.subs)
        keys = "".join(_label(k) for k in path.keys)
        if path.meta is not None:
            return f"json_type({inst}, {_lit(base + _label(path.meta) + keys)}) IS NOT NULL"
        if not path.keys:
            return "1" if not path.subs else f"json_type({inst}, {_lit(base)}) = 'object'"
        whens = []
        for member, _kind in VALUE_MEMBERS:
            m = base + _label(member)
            if member == "languageMap" and path.keys == ("*",):
                test = "1"
            else:
                test = f"json_type({inst}, {_lit(m + keys)}) IS NOT NULL"
            whens.append(f"WHEN json_type({inst}, {_lit(m)}) IS NOT NULL THEN {test}")
        return "CASE " + " ".join(whens) + " ELSE 0 END"

    def term_in(self, term: Term, inst: str) -> str:
        path = term.path
        base = "$" + "".join(_label(s) for s in path.subs)
        keys = "".join(_label(k) for k in path.keys)
        if path.meta is not None:
            return self.target(term, inst, _lit(base + _label(path.meta) + keys), "1")
        # Pick the value member once (q.VALUE_MEMBERS order) as its JSON path `p` and its class
        # `k` (v: value-like, r: relationship, l: languageMap, j: json), then write the
        # predicate once over that path: a CASE per member would repeat it seven times.
        m = self.alias("m")
        member_path = {member: _lit(base + _label(member)) for member, _ in VALUE_MEMBERS}
        pick = " ".join(
            f"WHEN json_type({inst}, {lit}) IS NOT NULL THEN {lit}" for lit in member_path.values()
        )
        classes = " ".join(
            f"WHEN {member_path[member]} THEN '{cls}'"
            for member, cls in (
                ("object", "r"),
                ("objectList", "r"),
                ("languageMap", "l"),
                ("json", "j"),
            )
        )
        xpath = f"{m}.p || {_lit(keys)}" if keys else f"{m}.p"
        whens = []
        if not relationship_allowed(term):
            whens.append(f"WHEN {m}.k = 'r' THEN 0")
        if not path.keys or path.keys == ("*",):
            whens.append(f"WHEN {m}.k = 'l' THEN {self.language(term, inst, m + '.p')}")
        general = self.target(term, inst, xpath, f"{m}.k != 'j'")
        test = f"CASE {' '.join(whens)} ELSE {general} END" if whens else general
        return (
            f"EXISTS (SELECT 1 FROM (SELECT p, CASE p {classes} ELSE 'v' END AS k"
            f" FROM (SELECT CASE {pick} END AS p)) AS {m} WHERE {m}.p IS NOT NULL AND {test})"
        )

    def target(self, term: Term, inst: str, x: str, unwrap: str) -> str:
        """Candidates of the JSON value at path expression ``x`` of ``inst``; typed literals are
        unwrapped where the SQL condition ``unwrap`` holds."""
        e = self.alias("e")
        ev = _lit('$."@value"')
        at = f"{x} || {_lit(_label('@value'))}"
        keep_e = (
            f"{e}.type != 'object'"
            if unwrap == "1"
            else f"({e}.type != 'object' OR NOT ({unwrap}))"
        )
        elem_v = (
            f"CASE WHEN {keep_e} THEN {e}.value"
            f" WHEN json_type({e}.value, {ev}) IS NOT NULL"
            f" THEN json_extract({e}.value, {ev}) ELSE {e}.value END"
        )
        elem_t = f"CASE WHEN {keep_e} THEN {e}.type ELSE coalesce(json_type({e}.value, {ev}), 'object') END"
        one_v = (
            f"CASE WHEN ({unwrap}) AND json_type({inst}, {at}) IS NOT NULL"
            f" THEN json_extract({inst}, {at}) ELSE json_extract({inst}, {x}) END"
        )
        one_t = (
            f"CASE WHEN ({unwrap}) THEN coalesce(json_type({inst}, {at}), json_type({inst}, {x}))"
            f" ELSE json_type({inst}, {x}) END"
        )
        cands = (
            f"SELECT {elem_v} AS v, {elem_t} AS t FROM json_each({inst}, {x}) AS {e}"
            f" WHERE json_type({inst}, {x}) = 'array'"
            f" UNION ALL SELECT {one_v} AS v, {one_t} AS t"
            f" WHERE json_type({inst}, {x}) != 'array'"
        )
        return self.quantify(term, cands, f"json_type({inst}, {x}) IS NOT NULL")

    def language(self, term: Term, inst: str, lm: str) -> str:
        """Candidates of a whole languageMap at path expression ``lm``: every string, arrays
        flattened."""
        a, b, e = self.alias("l"), self.alias("l"), self.alias("e")
        cands = (
            f"SELECT {e}.value AS v, {e}.type AS t FROM json_each({inst}, {lm}) AS {a},"
            f" json_each(CASE WHEN {a}.type = 'array' THEN {a}.value ELSE '[]' END) AS {e}"
            f" WHERE json_type({inst}, {lm}) = 'object'"
            f" UNION ALL SELECT {b}.value AS v, {b}.type AS t FROM json_each({inst}, {lm}) AS {b}"
            f" WHERE json_type({inst}, {lm}) = 'object' AND {b}.type != 'array'"
        )
        return self.quantify(term, cands, f"json_type({inst}, {lm}) IS NOT NULL")

    def quantify(self, term: Term, cands: str, exists: str) -> str:
        c = self.alias("c")
        negative, pred = self.predicate(term, f"{c}.v", f"{c}.t")
        found = f"EXISTS (SELECT 1 FROM ({cands}) AS {c} WHERE {pred})"
        return f"({exists} AND NOT {found})" if negative else found

    # -- candidate predicates: SQL twins of q.term_test ---------------------------------------

    def predicate(self, term: Term, v: str, t: str) -> tuple[bool, str]:
        if isinstance(term, Compare):
            if term.op in ("==", "!="):
                return term.op == "!=", self.equals(term.value, v, t)
            return False, self.ordered(term.op, term.value, v, t)
        if isinstance(term, InList):
            return term.negated, self.in_list(term.values, v, t)
        if isinstance(term, Range):
            return term.negated, self.in_range(term.low, term.high, v, t)
        if term.negated:
            return True, f"({t} != 'text' OR regexp({self.bind(term.regex)}, {v}))"
        return False, f"({t} = 'text' AND regexp({self.bind(term.regex)}, {v}))"

    def equals(self, value: Scalar, v: str, t: str) -> str:
        if isinstance(value, bool):
            return f"({t} = {_lit('true' if value else 'false')})"
        if isinstance(value, int | float):
            return f"({t} IN ('integer', 'real') AND {v} = {self.bind(_param(value))})"
        if isinstance(value, Temporal):
            kind = _lit(value.kind)
            return f"({t} = 'text' AND ngsi_temporal({kind}, {v}) = {self.bind(value.text)})"
        return f"({t} = 'text' AND {v} = {self.bind(value)})"

    def in_list(self, values: tuple[Scalar, ...], v: str, t: str) -> str:
        # Grouped by type into IN (...) lists: an OR per value would nest one level per value and
        # a long list would pass SQLite's expression depth limit (1000).
        numbers: list[Any] = []
        strings: list[str] = []
        booleans: set[str] = set()
        temporals: dict[str, list[str]] = {}
        for value in values:
            if isinstance(value, bool):
                booleans.add("true" if value else "false")
            elif isinstance(value, int | float):
                numbers.append(_param(value))
            elif isinstance(value, Temporal):
                temporals.setdefault(value.kind, []).append(value.text)
            else:
                strings.append(value)
        parts = []
        if numbers:
            marks = ", ".join(self.bind(n) for n in numbers)
            parts.append(f"({t} IN ('integer', 'real') AND {v} IN ({marks}))")
        if strings:
            marks = ", ".join(self.bind(x) for x in strings)
            parts.append(f"({t} = 'text' AND {v} IN ({marks}))")
        if booleans:
            parts.append(f"{t} IN ({', '.join(_lit(b) for b in sorted(booleans))})")
        for kind, texts in temporals.items():
            marks = ", ".join(self.bind(x) for x in texts)
            parts.append(f"({t} = 'text' AND ngsi_temporal({_lit(kind)}, {v}) IN ({marks}))")
        return "(" + " OR ".join(parts) + ")"

    def ordered(self, op: str, value: Scalar, v: str, t: str) -> str:
        if isinstance(value, bool):
            return "0"
        if isinstance(value, int | float):
            return f"({t} IN ('integer', 'real') AND {v} {op} {self.bind(_param(value))})"
        if isinstance(value, Temporal):
            kind = _lit(value.kind)
            return f"({t} = 'text' AND ngsi_temporal({kind}, {v}) {op} {self.bind(value.text)})"
        return f"({t} = 'text' AND {v} {op} {self.bind(value)})"

    def in_range(self, low: Scalar, high: Scalar, v: str, t: str) -> str:
        if isinstance(low, bool) or isinstance(high, bool):
            return "0"
        if isinstance(low, Temporal) and isinstance(high, Temporal) and low.kind == high.kind:
            x = f"ngsi_temporal({_lit(low.kind)}, {v})"
            lo, hi = self.bind(low.text), self.bind(high.text)
            return f"({t} = 'text' AND {x} >= {lo} AND {x} <= {hi})"
        if isinstance(low, int | float) and isinstance(high, int | float):
            lo, hi = self.bind(_param(low)), self.bind(_param(high))
            return f"({t} IN ('integer', 'real') AND {v} >= {lo} AND {v} <= {hi})"
        if isinstance(low, str) and isinstance(high, str):
            lo, hi = self.bind(low), self.bind(high)
            return f"({t} = 'text' AND {v} >= {lo} AND {v} <= {hi})"
        return "0"


def to_sqlite(node: QNode, doc_column: str = "e.doc") -> tuple[str, list[Any]]:
    """SQL (``?`` placeholders) true for the rows whose ``doc_column`` JSON matches ``node``.

    ``doc_column`` is pasted into the SQL as is: pass a column name, never client text.
    """
    builder = _Builder(doc_column)
    sql = builder.node(node)
    return sql, builder.params


def scope_to_sqlite(node: ScopeNode, doc_column: str = "e.doc") -> tuple[str, list[Any]]:
    """SQL (``?`` placeholders) true for the rows whose ``doc_column`` JSON has scopes that
    satisfy the scope query (§4.19), as ``scope.evaluate_scope`` decides."""
    params: list[Any] = []

    def sql(n: ScopeNode) -> str:
        if isinstance(n, ScopeTerm):
            if n.exact:
                params.append("/" + "/".join(n.levels))
                test = "s.value = ?"
            else:
                params.append(scope_regex(n))
                test = "regexp(?, s.value)"
            return (
                f"EXISTS (SELECT 1 FROM json_each({doc_column}, '$.scope') s"
                f" WHERE s.type = 'text' AND {test})"
            )
        joiner = " AND " if isinstance(n, ScopeAnd) else " OR "
        return "(" + joiner.join(sql(i) for i in n.items) + ")"

    return sql(node), params


__all__ = ["install_sqlite_functions", "scope_to_sqlite", "to_sqlite"]
