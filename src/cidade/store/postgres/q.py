"""A parsed ``q`` (``cidade.ngsild.query.q``) as a PostgreSQL 15 WHERE fragment over ``jsonb``.

``to_postgres(node, doc_column, first_param)`` returns SQL with asyncpg placeholders
``$first_param, ...`` and the list of their values. The fragment selects exactly the entities
that ``q.evaluate`` accepts (tests/hub/test_q_postgres.py holds the two to that); it follows the
structure of ``sqlite_q``:

* one ``EXISTS`` over the instances of the attribute (``jsonb_array_elements``);
* a lateral sub-select picks the instance's value member in the order of ``q.VALUE_MEMBERS``
  (``m.k`` its class: v value-like, r relationship, l languageMap, j json; ``m.t`` its value);
* the candidates are the elements of one jsonb array per instance (the target's elements, the
  target itself, or a languageMap's strings flattened), typed literals unwrapped, so a predicate
  is written once and type discipline is a test on ``jsonb_typeof`` (``5`` never equals ``"5"``;
  JSON ``true`` is not ``1``);
* positive operators are "EXISTS (a candidate that matches)"; ``!=`` and ``!~=`` are "the target
  exists AND NOT EXISTS (a candidate that is equal / that is not a string the pattern misses)".

Nothing has to be installed on the server: temporal normalization (``q.temporal``) is written in
SQL below, and regular expressions are translated from Python ``re`` syntax to an equivalent
PostgreSQL ARE (see ``translate_regex``).

Parameters are typed so that no connection codec is involved: ``text``, ``text[]``,
``numeric`` / ``numeric[]`` (``decimal.Decimal``) and ``jsonpath`` (a ``str``). Numbers compare as
``numeric``: a JSON number is the exact decimal of its text, a q float the decimal of its
``repr`` (shortest round-trip), so comparisons agree with Python's except between an integer and
a float beyond 2**53 (Python compares those by binary value).

Indexes (the ``index`` argument names the operator class of the GIN index on the doc column).
Prefilters are supersets of the exact test, added in front of it so that the index narrows the
rows first; only those the index answers precisely are written, since for a condition it cannot
index PostgreSQL may still choose the index and read all of it:

* ``jsonb_path_ops`` (the default; ``USING gin (doc jsonb_path_ops)``): a positive ``==`` (one
  value or a list, not temporal) on a path with a bracket (``a[k]==1``) or an instance member
  (``a.datasetId==urn:x``) adds ``doc @? '<jsonpath>'`` naming the candidate paths and values.
  On a bare attribute (``a==1``, ``a=="x"``) it cannot: a LanguageProperty makes the term match
  any of its languages, a wildcard (``.*``) that ``jsonb_path_ops`` does not index.
* ``jsonb_ops`` (``USING gin (doc)``): that prefilter on every positive ``==``, bare attributes
  included, and on every other term but ``!attr`` the existence prefilter
  ``doc @> '{"attrs": {"<iri>": []}}'``.
* None: no prefilter.

Requirements on the stored JSON: ``jsonb`` cannot hold ``\\u0000`` in strings, so candidate
strings never contain NUL; q strings that do are handled as such (never equal, ordered as the
prefix before their NUL).

Run these queries with ``jit = off`` (e.g. asyncpg ``server_settings={"jit": "off"}``): the
set-returning functions are estimated at 100 rows each, so a few thousand rows put the plan
over ``jit_above_cost``, and compiling the nested expressions takes PostgreSQL 15 from a tenth
of a second to seconds, where the query itself runs in milliseconds.
"""

from __future__ import annotations

import json
import math
import re
import re._constants as sre_c
import re._parser as sre_parse
from array import array
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.q import (
    KIND_JSON,
    KIND_LANG,
    KIND_REL,
    VALUE_MEMBERS,
    And,
    Compare,
    Exists,
    InList,
    NotExists,
    Or,
    Path,
    Pattern,
    QNode,
    Range,
    Scalar,
    Temporal,
    Term,
    relationship_allowed,
)
from cidade.ngsild.query.scope import ScopeAnd, ScopeNode, ScopeTerm, scope_regex

_MEMBER_CLASS = {KIND_REL: "r", KIND_LANG: "l", KIND_JSON: "j"}

GinIndex: TypeAlias = Literal["jsonb_path_ops", "jsonb_ops"] | None


def _lit(text: str) -> str:
    # standard_conforming_strings is on (the default since 9.1): only quotes need doubling.
    if "\x00" in text:
        raise ValueError("NUL cannot appear in SQL text")
    return "'" + text.replace("'", "''") + "'"


def _keys_sql(keys: Iterable[str]) -> str:
    return "".join(f" -> {_lit(k)}" for k in keys)


def _jp_key(key: str) -> str:
    # A quoted jsonpath member accessor; json.dumps escapes as jsonpath string literals want.
    return "." + json.dumps(key, ensure_ascii=False)


def _lang_all(path: Path) -> bool:
    """Does a LanguageProperty target mean "every string of the languageMap" on this path?"""
    return path.meta is None and (not path.keys or path.keys == ("*",))


def _number(value: int | float) -> Decimal:
    # repr is the shortest text that round-trips the double, and the text a stored float has.
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _nul_prefix(text: str) -> str | None:
    """The part of ``text`` before its first NUL, or None when it has none."""
    i = text.find("\x00")
    return None if i < 0 else text[:i]


# -- temporal normalization: the SQL twin of q.temporal -------------------------------------------

# The formats of q._DATETIME, q._DATE and q._TIME, without capturing groups: PostgreSQL checks
# those with a DFA in a microsecond, where regexp_match's sub-match dissection costs thirty; the
# fields are then cut out by position.
_DATETIME_ARE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}"
    r"(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
# The hub's own format (createdAt, observedAt, ...): already normalized when it is a valid date.
_CANONICAL_ARE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
_DATE_ARE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIME_ARE = r"^[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?Z?$"


def _valid_date(y: str, mo: str, d: str) -> str:
    """SQL: the int expressions y-mo-d are a date of years 1..9999 (Python's datetime)."""
    days = (
        f"CASE WHEN {mo} IN (4, 6, 9, 11) THEN 30 WHEN {mo} = 2 THEN CASE WHEN {y} % 4 = 0"
        f" AND ({y} % 100 <> 0 OR {y} % 400 = 0) THEN 29 ELSE 28 END ELSE 31 END"
    )
    return f"{y} >= 1 AND {mo} BETWEEN 1 AND 12 AND {d} BETWEEN 1 AND ({days})"


def _micros(fraction: str) -> str:
    # Python keeps the first six fraction digits (truncation, not rounding), padded with zeros.
    return f"rpad(left({fraction}, 6), 6, '0')"


def _datetime_sql(s: str) -> str:
    """SQL: the text expression ``s`` as q.temporal("DateTime", s), or NULL."""
    field = "substr(qz.s, {}, {})::int"
    y, mo, d, h, mi, sec = (
        field.format(at, n) for at, n in ((1, 4), (6, 2), (9, 2), (12, 2), (15, 2), (18, 2))
    )
    return (
        f"(SELECT CASE WHEN NOT qz.canonical THEN {_datetime_general_sql('qz.s')}"
        f" WHEN {_valid_date(y, mo, d)} AND {h} <= 23 AND {mi} <= 59 AND {sec} <= 59"
        " THEN qz.s END"
        f" FROM (SELECT {s} AS s, {s} ~ {_lit(_CANONICAL_ARE)} AS canonical OFFSET 0) AS qz)"
    )


def _datetime_general_sql(s: str) -> str:
    """SQL: the text expression ``s`` as q.temporal("DateTime", s), or NULL.

    Each step is a fenced (OFFSET 0) sub-select so that it runs once: unfenced, the planner
    would paste every expression into every use. A field is cast only once the format is known
    to hold (a cast of a non-digit would raise). The UTC offset moves whole minutes, so seconds
    and fraction are copied as written and only the minute-resolution part goes through
    timestamp arithmetic, which cannot fail: an interval added to year 1. Invalid dates are
    refused first, as Python's datetime() does, and results outside years 1..9999 are None in
    Python (OverflowError) and NULL here.
    """
    field = "CASE WHEN qb.tail IS NOT NULL THEN substr(qa.s, {}, {})::int END AS {}"
    fields = ", ".join(
        field.format(at, n, name)
        for at, n, name in ((1, 4, "y"), (6, 2, "mo"), (9, 2, "d"), (12, 2, "h"), (15, 2, "mi"))
    )
    digits = "replace(qd.zone, ':', '')"
    offset = (
        "CASE WHEN qd.zone IN ('', 'Z') THEN 0"
        " ELSE (CASE WHEN left(qd.zone, 1) = '-' THEN -1 ELSE 1 END)"
        f" * (substr({digits}, 2, 2)::int * 60 + substr({digits}, 4, 2)::int) END"
    )
    fraction = (
        "CASE WHEN left(qc.rest, 1) = '.'"
        " THEN substr(qc.rest, 2, length(qc.rest) - 1 - length(qd.zone)) ELSE '' END"
    )
    shifted = (
        "timestamp '0001-01-01' + make_interval(years => qf.y - 1, months => qf.mo - 1,"
        " days => qf.d - 1, hours => qf.h, mins => qf.mi - qf.off)"
    )
    valid = (
        f"qb.tail IS NOT NULL AND {_valid_date('qf.y', 'qf.mo', 'qf.d')} AND qf.h <= 23"
        " AND qf.mi <= 59 AND qc.sec::int <= 59 AND abs(qf.off) < 1440"
        " AND qu.ts >= timestamp '0001-01-01' AND qu.ts < timestamp '10000-01-01'"
    )
    text = (
        "to_char(qu.ts, 'YYYY-MM-DD\"T\"HH24:MI:') || qc.sec"
        f" || '.' || {_micros('qf.fraction')} || 'Z'"
    )
    colon = "left(qb.tail, 1) = ':'"
    return (
        f"(SELECT CASE WHEN {valid} THEN {text} END"
        f" FROM (SELECT {s} AS s OFFSET 0) AS qa,"
        # tail: what follows YYYY-MM-DDTHH:MM, or NULL when the format does not hold
        f" LATERAL (SELECT CASE WHEN qa.s ~ {_lit(_DATETIME_ARE)} THEN substr(qa.s, 17) END"
        " AS tail OFFSET 0) AS qb,"
        f" LATERAL (SELECT CASE WHEN {colon} THEN substr(qb.tail, 2, 2) ELSE '00' END AS sec,"
        f" CASE WHEN {colon} THEN substr(qb.tail, 4) ELSE qb.tail END AS rest OFFSET 0) AS qc,"
        # the zone is 'Z' or starts at the only '+' or '-' after the minutes
        " LATERAL (SELECT CASE WHEN right(qc.rest, 1) = 'Z' THEN 'Z'"
        " WHEN strpos(qc.rest, '+') > 0 THEN substr(qc.rest, strpos(qc.rest, '+'))"
        " WHEN strpos(qc.rest, '-') > 0 THEN substr(qc.rest, strpos(qc.rest, '-'))"
        " ELSE '' END AS zone OFFSET 0) AS qd,"
        f" LATERAL (SELECT {fields}, {fraction} AS fraction, {offset} AS off OFFSET 0) AS qf,"
        f" LATERAL (SELECT {shifted} AS ts OFFSET 0) AS qu)"
    )


def _temporal_sql(kind: str, s: str) -> str:
    """SQL: the text expression ``s`` normalized as q.temporal(kind, s), or NULL."""
    if kind == "DateTime":
        return _datetime_sql(s)
    if kind == "Date":
        y, mo, d = "substr(qt.s, 1, 4)::int", "substr(qt.s, 6, 2)::int", "substr(qt.s, 9, 2)::int"
        return (
            f"(SELECT CASE WHEN NOT qt.ok THEN left({_datetime_sql('qt.s')}, 10)"
            f" WHEN {_valid_date(y, mo, d)} THEN qt.s END"
            f" FROM (SELECT {s} AS s, {s} ~ {_lit(_DATE_ARE)} AS ok OFFSET 0) AS qt)"
        )
    if kind == "Time":
        h, mi, sec = "substr(qt.s, 1, 2)", "substr(qt.s, 4, 2)", "substr(qt.s, 7, 2)"
        seconds = "substr(qt.s, 6, 1) = ':'"
        fraction = (
            "CASE WHEN substr(qt.s, 9, 1) = '.'"
            " THEN substr(qt.s, 10, length(qt.s) - 9 - (right(qt.s, 1) = 'Z')::int) ELSE '' END"
        )
        return (
            f"(SELECT CASE WHEN NOT qt.ok THEN substr({_datetime_sql('qt.s')}, 12)"
            f" WHEN {h}::int <= 23 AND {mi}::int <= 59"
            f" AND CASE WHEN {seconds} THEN {sec}::int ELSE 0 END <= 59"
            f" THEN {h} || ':' || {mi} || ':' || CASE WHEN {seconds} THEN {sec} ELSE '00' END"
            f" || '.' || {_micros(fraction)} || 'Z' END"
            f" FROM (SELECT {s} AS s, {s} ~ {_lit(_TIME_ARE)} AS ok OFFSET 0) AS qt)"
        )
    raise ValueError(f"not a temporal kind: {kind!r}")


# -- regular expressions: Python re -> PostgreSQL ARE ---------------------------------------------
#
# The pattern is parsed by Python's own parser (re._parser, the one re.compile uses), and every
# node is written as ARE that matches the same strings. Whether a match EXISTS (all that q asks)
# does not depend on greedy or lazy quantifiers, so those need no care. What does differ, and is
# rewritten:
# * character sets: every "one character" node (a class, \d \w \s, a literal under IGNORECASE)
#   is turned into the explicit set of code points Python matches, computed by running the
#   compiled Python class over every character a PostgreSQL text can hold, so Unicode classes
#   and Python's case folding are exactly Python's, whatever the database locale;
# * '.' does not match '\n' without DOTALL; '$' also matches before a final '\n'; MULTILINE
#   '^' and '$'; \b and \B (with Python's \w, and their behaviour on the empty string);
# * capturing groups inside lookarounds do not count in ARE: back references are renumbered.
# Refused with a 400 (no ARE equivalent): conditionals (?(1)..), atomic groups and possessive
# quantifiers, back references under IGNORECASE, inside a lookaround, or to a group inside a
# lookaround or a repetition, repetition counts above 255 (ARE's limit), and patterns too large
# for PostgreSQL's regex compiler (see _MAX_WEIGHT).

_NEVER = "(?=a)b"  # matches nothing
_ANY_BUT_NEWLINE = "[^\\u000a]"
_MAXREPEAT = int(sre_c.MAXREPEAT)
_ARE_DUPMAX = 255
# PostgreSQL refuses ("regular expression is too complex") an ARE whose automaton grows past a
# fixed budget: repetitions are unrolled, and constraints (lookarounds, word boundaries) multiply
# states. Measured on 15: 5000 unrolled characters compile, 10000 do not; twenty word boundaries
# in a row do not, not even ARE's own \y. _weight estimates that size, and the caps keep well
# inside what compiles; the cap on the text bounds compile time.
_MAX_WEIGHT = 2000
_LOOKAROUND_WEIGHT = 30
_BOUNDARY_WEIGHT = 150
_MAX_ARE_LENGTH = 200_000
_CATEGORY = {
    sre_c.CATEGORY_DIGIT: r"\d",
    sre_c.CATEGORY_NOT_DIGIT: r"\D",
    sre_c.CATEGORY_SPACE: r"\s",
    sre_c.CATEGORY_NOT_SPACE: r"\S",
    sre_c.CATEGORY_WORD: r"\w",
    sre_c.CATEGORY_NOT_WORD: r"\W",
}
# Python 3.14 made \B match the empty string; earlier versions never match \b or \B there.
_B_MATCHES_EMPTY = re.search(r"\B", "") is not None


@lru_cache(maxsize=1)
def _universe() -> str:
    """Every character a PostgreSQL text can hold: U+0001..U+10FFFF without surrogates."""
    low = array("I", range(1, 0xD800)).tobytes().decode("utf-32-le")
    return low + array("I", range(0xE000, 0x110000)).tobytes().decode("utf-32-le")


def _code_point(index: int) -> int:
    return index + 1 if index < 0xD7FF else index + 0x801


def _are_char(cp: int) -> str:
    # ASCII letters and digits as themselves, other ASCII as \uXXXX (never special, in or out
    # of brackets), non-ASCII as itself (no ARE syntax is non-ASCII).
    if cp < 128:
        c = chr(cp)
        return c if c.isalnum() else f"\\u{cp:04x}"
    return chr(cp)


def _are_ranges(runs: list[tuple[int, int]]) -> str:
    out = []
    for lo, hi in runs:
        a, b = _code_point(lo), _code_point(hi)
        out.append(_are_char(a) if a == b else f"{_are_char(a)}-{_are_char(b)}")
    return "".join(out)


@lru_cache(maxsize=1024)
def _char_set(source: str, flags: int) -> str:
    """ARE for the characters the one-character Python regex ``source`` matches."""
    universe = _universe()
    rx = re.compile(f"(?:{source})+", flags)
    runs = [(m.start(), m.end() - 1) for m in rx.finditer(universe)]
    if not runs:
        return _NEVER
    gaps: list[tuple[int, int]] = []
    at = 0
    for lo, hi in runs:
        if lo > at:
            gaps.append((at, lo - 1))
        at = hi + 1
    if at < len(universe):
        gaps.append((at, len(universe) - 1))
    if not gaps:
        return "."  # ARE's '.' matches every character, newline included
    if len(runs) == 1 and runs[0][0] == runs[0][1]:
        return _are_char(_code_point(runs[0][0]))
    if len(gaps) < len(runs):
        return f"[^{_are_ranges(gaps)}]"
    return f"[{_are_ranges(runs)}]"


def _refuse(pattern: str, what: str) -> BadRequestData:
    return BadRequestData(
        f"regular expression {pattern!r}: {what} cannot be evaluated by the PostgreSQL store"
    )


class _RegexWriter:
    __slots__ = ("captured", "constrained", "groups", "pattern", "repeated")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.captured = 0  # capturing groups written so far (ARE numbers them outside lookarounds)
        # Python group -> ARE group, or None when a back reference to it cannot be written: in a
        # lookaround ARE does not capture; in a repetition Python keeps what an earlier
        # iteration captured and ARE does not.
        self.groups: dict[int, int | None] = {}
        self.constrained: set[int] = set()  # groups whose translation holds a lookaround
        self.repeated = 0  # depth of repetitions (more than once) around the current node

    def seq(self, items: Any, flags: int, look: bool) -> str:
        return "".join(self.item(op, av, flags, look) for op, av in items)

    def item(self, op: Any, av: Any, flags: int, look: bool) -> str:
        char_flags = flags & (re.IGNORECASE | re.ASCII)
        if op is sre_c.LITERAL:
            if flags & re.IGNORECASE:
                return _char_set(f"\\U{av:08x}", char_flags)
            if av == 0 or 0xD800 <= av <= 0xDFFF:
                return _NEVER  # a PostgreSQL text holds no NUL and no surrogate
            return _are_char(av)
        if op is sre_c.NOT_LITERAL:
            return _char_set(f"[^\\U{av:08x}]", char_flags)
        if op is sre_c.IN:
            return _char_set(self.char_class(av), char_flags)
        if op is sre_c.ANY:
            return "." if flags & re.DOTALL else _ANY_BUT_NEWLINE
        if op is sre_c.AT:
            return self.at(av, flags)
        if op is sre_c.SUBPATTERN:
            group, add_flags, del_flags, sub = av
            sub_flags = (flags | add_flags) & ~del_flags
            if group is None or look:
                if group is not None:
                    self.groups[group] = None  # ARE does not capture inside lookarounds
                return f"(?:{self.seq(sub, sub_flags, look)})"
            # Numbered when it opens, in Python as in ARE, so before the groups inside it.
            self.captured += 1
            self.groups[group] = None if self.repeated else self.captured
            inner = self.seq(sub, sub_flags, look)
            if "(?=" in inner or "(?!" in inner or "(?<" in inner:
                # PostgreSQL's engine misjudges a back reference to a group that holds a
                # lookaround (as $ and \b become): "((?:a|(?=$)))\1" does not find "ab".
                self.constrained.add(group)
            return f"({inner})"
        if op is sre_c.BRANCH:
            return "(?:" + "|".join(self.seq(alt, flags, look) for alt in av[1]) + ")"
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            return self.repeat(av, flags, look)
        if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            direction, sub = av
            inner = self.seq(sub, flags, True)
            behind = "<" if direction < 0 else ""
            if op is sre_c.ASSERT:
                return f"(?{behind}={inner})" if inner else ""
            return f"(?{behind}!{inner})" if inner else _NEVER
        if op is sre_c.GROUPREF:
            if flags & re.IGNORECASE:
                raise _refuse(self.pattern, "a back reference under IGNORECASE")
            if look:
                raise _refuse(self.pattern, "a back reference inside a lookaround")
            if av in self.constrained:
                raise _refuse(
                    self.pattern, "a back reference to a group holding an anchor or a lookaround"
                )
            target = self.groups.get(av)
            if target is None:
                raise _refuse(
                    self.pattern, "a back reference to a group inside a lookaround or a repetition"
                )
            return f"(?:\\{target})"
        if op is sre_c.GROUPREF_EXISTS:
            raise _refuse(self.pattern, "a conditional group (?(...)...)")
        if op in (sre_c.ATOMIC_GROUP, sre_c.POSSESSIVE_REPEAT):
            raise _refuse(self.pattern, "an atomic group or a possessive quantifier")
        raise _refuse(self.pattern, f"the construct {op}")

    def char_class(self, items: Any) -> str:
        parts = []
        for op, av in items:
            if op is sre_c.NEGATE:
                parts.insert(0, "^")
            elif op is sre_c.LITERAL:
                parts.append(f"\\U{av:08x}")
            elif op is sre_c.RANGE:
                parts.append(f"\\U{av[0]:08x}-\\U{av[1]:08x}")
            elif op is sre_c.CATEGORY and av in _CATEGORY:
                parts.append(_CATEGORY[av])
            else:
                raise _refuse(self.pattern, f"the class item {op}")
        return "[" + "".join(parts) + "]"

    def at(self, where: Any, flags: int) -> str:
        multiline = flags & re.MULTILINE
        if where is sre_c.AT_BEGINNING:
            return "(?:^|(?<=\\u000a))" if multiline else "^"
        if where is sre_c.AT_BEGINNING_STRING:
            return "^"
        if where is sre_c.AT_END:
            # Python's '$' also matches before a newline that ends the string.
            return "(?=\\u000a|$)" if multiline else "(?=\\u000a?$)"
        if where is sre_c.AT_END_STRING:
            return "$"
        if where in (sre_c.AT_BOUNDARY, sre_c.AT_NON_BOUNDARY):
            w = _char_set(r"\w", flags & re.ASCII)
            if where is sre_c.AT_BOUNDARY:
                # Never true on the empty string: no character on either side.
                return f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))"
            non_word_edge = f"(?<!{w})(?!{w})"
            if not _B_MATCHES_EMPTY:
                non_word_edge += "(?:(?<=.)|(?=.))"  # ... except on the empty string
            return f"(?:(?<={w})(?={w})|{non_word_edge})"
        raise _refuse(self.pattern, f"the anchor {where}")

    def repeat(self, av: Any, flags: int, look: bool) -> str:
        low, high, sub = av
        if low > _ARE_DUPMAX or (high != _MAXREPEAT and high > _ARE_DUPMAX):
            raise _refuse(self.pattern, f"a repetition count above {_ARE_DUPMAX}")
        if _zero_width(sub):
            # An assertion holds or not at a position, however often it is repeated there.
            return self.seq(sub, flags, look) if low else ""
        repeats = high > 1
        self.repeated += repeats
        inner = self.seq(sub, flags, look)
        self.repeated -= repeats
        if not inner:
            return ""
        if (low, high) == (0, _MAXREPEAT):
            quantifier = "*"
        elif (low, high) == (1, _MAXREPEAT):
            quantifier = "+"
        elif (low, high) == (0, 1):
            quantifier = "?"
        elif high == _MAXREPEAT:
            quantifier = f"{{{low},}}"
        else:
            quantifier = f"{{{low},{high}}}"
        return f"(?:{inner}){quantifier}"


def _zero_width(items: Any) -> bool:
    """Does the parsed pattern only assert (anchors, lookarounds), capturing nothing?"""
    for op, av in items:
        if op is sre_c.BRANCH:
            if not all(_zero_width(alt) for alt in av[1]):
                return False
        elif op is sre_c.SUBPATTERN:
            if av[0] is not None or not _zero_width(av[3]):
                return False
        elif op not in (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT):
            return False
    return True


def _weight(items: Any) -> int:
    """A rough size of the automaton ARE builds for the parsed pattern ``items``."""
    total = 0
    for op, av in items:
        if op is sre_c.SUBPATTERN:
            total += _weight(av[3])
        elif op is sre_c.BRANCH:
            total += sum(_weight(alt) + 1 for alt in av[1])
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, high, sub = av
            copies = low + 1 if high == _MAXREPEAT else max(high, 1)
            if _zero_width(sub):
                copies = 1  # written once (see _RegexWriter.repeat)
            total += _weight(sub) * copies + 1
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            total += _weight(av[1]) + _LOOKAROUND_WEIGHT
        elif op is sre_c.ATOMIC_GROUP:
            total += _weight(av)
        elif op is sre_c.AT and av in (sre_c.AT_BOUNDARY, sre_c.AT_NON_BOUNDARY):
            total += _BOUNDARY_WEIGHT
        elif op is sre_c.AT and av in (sre_c.AT_BEGINNING, sre_c.AT_END):
            total += _LOOKAROUND_WEIGHT  # Python's '^' and '$' may need a lookaround
        else:
            total += 1
    return total


@lru_cache(maxsize=512)
def translate_regex(pattern: str) -> str:
    """A PostgreSQL ARE that finds a match in exactly the strings where Python's
    ``re.search(pattern, s)`` does (for strings without NUL, which PostgreSQL cannot hold).

    Raises ``BadRequestData`` for the few constructs ARE cannot express (see the comment above).
    """
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise BadRequestData(f"invalid regular expression: {exc}") from None
    if _weight(parsed) > _MAX_WEIGHT:
        raise _refuse(pattern, "a pattern this large (after unrolling repetitions)")
    are = _RegexWriter(pattern).seq(parsed, parsed.state.flags, False)
    if len(are) > _MAX_ARE_LENGTH:
        raise _refuse(pattern, "a pattern this large (after spelling out its classes)")
    return are


# -- the fragment ---------------------------------------------------------------------------------


class _Builder:
    __slots__ = ("doc", "first", "index", "n", "params")

    def __init__(self, doc: str, first: int, index: GinIndex) -> None:
        self.doc = doc
        self.first = first
        self.index = index
        self.params: list[Any] = []
        self.n = 0

    def alias(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def bind(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${self.first + len(self.params) - 1}::{cast}"

    def node(self, node: QNode) -> str:
        if isinstance(node, And | Or):
            if not node.items:
                return "TRUE" if isinstance(node, And) else "FALSE"
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(self.node(item) for item in node.items) + ")"
        if isinstance(node, NotExists):
            return "NOT " + self.exists(node.path)
        if isinstance(node, Exists):
            prefilter, test = self.has_attr(node.path), self.exists(node.path)
        else:
            prefilter, test = (
                self.equality_prefilter(node) or self.has_attr(node.path),
                self.term(node),
            )
        return f"({prefilter} AND {test})" if prefilter else test

    # -- prefilters: supersets of a term that the GIN index on the doc can serve ----------------
    # Only those the index answers precisely: a condition it cannot index would not just be
    # useless, PostgreSQL may still choose the index and read all of it (GIN "match all").

    def has_attr(self, path: Path) -> str | None:
        if self.index != "jsonb_ops":
            return None  # jsonb_path_ops indexes values, and this names keys only
        shape = json.dumps({"attrs": {path.attr: []}}, ensure_ascii=False)
        return f"{self.doc} @> {_lit(shape)}::jsonb"

    def equality_prefilter(self, term: Term) -> str | None:
        if isinstance(term, Compare) and term.op == "==":
            values: tuple[Scalar, ...] = (term.value,)
        elif isinstance(term, InList) and not term.negated:
            values = term.values
        else:
            return None
        literals = []
        for value in values:
            if isinstance(value, Temporal):
                return None  # compared after normalization: no index can see it
            if isinstance(value, bool):
                literals.append("true" if value else "false")
            elif isinstance(value, int | float):
                if isinstance(value, int) or math.isfinite(value):
                    literals.append(json.dumps(value))
            elif "\x00" not in value:  # no stored string holds NUL
                literals.append(json.dumps(value, ensure_ascii=False))
        if not literals:
            return "FALSE"
        path = term.path
        if self.index is None or (self.index == "jsonb_path_ops" and _lang_all(path)):
            return None  # jsonb_path_ops cannot index the languageMap wildcard
        targets: list[tuple[str, bool]] = []  # (accessor from the instance, unwrap typed literals)
        keys = "".join(_jp_key(k) for k in path.keys)
        if path.meta is not None:
            targets.append((_jp_key(path.meta) + keys, True))
        else:
            for member, kind in VALUE_MEMBERS:
                if kind == KIND_LANG and _lang_all(path):
                    targets.append((_jp_key(member) + ".*", False))
                else:
                    targets.append((_jp_key(member) + keys, kind != KIND_JSON))
        # Lax mode compares each element of an array operand: arrays of candidates are covered.
        tests = []
        for accessor, unwrap in targets:
            for literal in literals:
                tests.append(f"@{accessor} == {literal}")
                if unwrap:
                    tests.append(f'@{accessor}."@value" == {literal}')
        instance = "$.attrs" + _jp_key(path.attr) + "[*]" + "".join(_jp_key(s) for s in path.subs)
        jsonpath = instance + " ? (" + " || ".join(tests) + ")"
        return f"{self.doc} @? {self.bind(jsonpath, 'jsonpath')}"

    # -- exact tests ------------------------------------------------------------------------------
    # doc_column is referenced inside these sub-selects, where the aliases are qi1, qm2, ...
    # (and qa ... qz in the temporal ones): the caller's table alias must not be one of those.

    def instances(
        self,
        path: Path,
        where: Callable[[str], str],
        lateral: Callable[[str], str] | None = None,
    ) -> str:
        """EXISTS over the instance dicts of the path; ``where`` and ``lateral`` get the SQL of
        the instance dict (after the sub-attribute names)."""
        attr = f"{self.doc} -> 'attrs' -> {_lit(path.attr)}"
        i = self.alias("qi")
        node = f"{i}.x" + _keys_sql(path.subs)
        joined = lateral(node) if lateral else ""
        return (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({attr}) = 'array'"
            f" THEN {attr} END) AS {i}(x){joined}"
            f" WHERE jsonb_typeof({node}) = 'object' AND {where(node)})"
        )

    @staticmethod
    def member(m: str) -> Callable[[str], str]:
        """A lateral sub-select ``m(k, t)``: the class and value of the instance's value member,
        picked in the order of q.VALUE_MEMBERS."""

        def lateral(node: str) -> str:
            kinds = " ".join(
                f"WHEN {node} ? {_lit(member)} THEN '{_MEMBER_CLASS.get(kind, 'v')}'"
                for member, kind in VALUE_MEMBERS
            )
            values = ", ".join(f"{node} -> {_lit(member)}" for member, _ in VALUE_MEMBERS)
            return (
                f" CROSS JOIN LATERAL (SELECT CASE {kinds} END AS k,"
                f" coalesce({values}) AS t) AS {m}"
            )

        return lateral

    def exists(self, path: Path) -> str:
        keys = _keys_sql(path.keys)
        if path.meta is not None:
            meta = _keys_sql([path.meta])
            return self.instances(path, lambda n: f"({n}{meta}{keys}) IS NOT NULL")
        if not path.keys:
            return self.instances(path, lambda n: "TRUE")
        m = self.alias("qm")
        test = f"({m}.t{keys}) IS NOT NULL"
        if path.keys == ("*",):
            test = f"({m}.k = 'l' OR {test})"
        return self.instances(path, lambda n: f"{m}.k IS NOT NULL AND {test}", self.member(m))

    def term(self, term: Term) -> str:
        path = term.path
        keys = _keys_sql(path.keys)
        if path.meta is not None:
            meta = _keys_sql([path.meta])
            return self.instances(path, lambda n: self.candidates(term, f"({n}{meta}{keys})", None))
        m = self.alias("qm")
        rel = "" if relationship_allowed(term) else f" AND {m}.k <> 'r'"
        if _lang_all(path) and keys:
            target = f"(CASE WHEN {m}.k = 'l' THEN {m}.t ELSE {m}.t{keys} END)"
        else:
            target = f"({m}.t{keys})"
        return self.instances(
            path,
            lambda n: f"{m}.k IS NOT NULL{rel} AND {self.candidates(term, target, m)}",
            self.member(m),
        )

    def candidates(self, term: Term, target: str, m: str | None) -> str:
        """The quantified test over the candidates of ``target`` (a jsonb expression); ``m`` is
        the member alias, None for an instance member (observedAt, ...)."""
        elements = (
            f"CASE WHEN {target} IS NULL THEN NULL WHEN jsonb_typeof({target}) = 'array'"
            f" THEN {target} ELSE jsonb_build_array({target}) END"
        )
        if m is not None and _lang_all(term.path):
            # Every value of the languageMap, arrays flattened one level (lax [*] keeps a
            # non-array as itself); no typed literal is unwrapped there.
            lang = (
                f"CASE WHEN jsonb_typeof({m}.t) = 'object'"
                f" THEN jsonb_path_query_array({m}.t, 'lax $.*[*]') END"
            )
            elements = f"CASE WHEN {m}.k = 'l' THEN {lang} ELSE {elements} END"
            keep = f"{m}.k IN ('j', 'l')"
        else:
            keep = "FALSE" if m is None else f"{m}.k = 'j'"
        e, c = self.alias("qe"), self.alias("qc")
        # A typed literal {"@value": v, ...} is compared as v, except inside a JsonProperty.
        value = f"CASE WHEN {keep} THEN {e}.c ELSE coalesce({e}.c -> '@value', {e}.c) END"
        negative, pred = self.predicate(term, f"{c}.v")
        found = (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements({elements}) AS {e}(c)"
            f" CROSS JOIN LATERAL (SELECT {value} AS v) AS {c} WHERE {pred})"
        )
        return f"({target} IS NOT NULL AND NOT {found})" if negative else found

    # -- candidate predicates: SQL twins of q.term_test -------------------------------------------

    def predicate(self, term: Term, c: str) -> tuple[bool, str]:
        if isinstance(term, Compare):
            if term.op in ("==", "!="):
                return term.op == "!=", self.in_list((term.value,), c)
            return False, self.ordered(term.op, term.value, c)
        if isinstance(term, InList):
            return term.negated, self.in_list(term.values, c)
        if isinstance(term, Range):
            return term.negated, self.in_range(term.low, term.high, c)
        assert isinstance(term, Pattern)
        rx = self.bind(translate_regex(term.regex), "text")
        if term.negated:
            return True, f"(jsonb_typeof({c}) <> 'string' OR ({c} #>> '{{}}') ~ {rx})"
        return False, f"(jsonb_typeof({c}) = 'string' AND ({c} #>> '{{}}') ~ {rx})"

    def in_list(self, values: tuple[Scalar, ...], c: str) -> str:
        numbers: list[Decimal] = []
        strings: list[str] = []
        booleans: set[str] = set()
        temporals: dict[str, list[str]] = {}
        for value in values:
            if isinstance(value, bool):
                booleans.add("true" if value else "false")
            elif isinstance(value, int | float):
                if not (isinstance(value, float) and math.isnan(value)):  # NaN equals nothing
                    numbers.append(_number(value))
            elif isinstance(value, Temporal):
                temporals.setdefault(value.kind, []).append(value.text)
            elif "\x00" not in value:  # no stored string holds NUL
                strings.append(value)
        s = f"({c} #>> '{{}}')"
        parts = []
        if numbers:
            eq = (
                f"= {self.bind(numbers[0], 'numeric')}"
                if len(numbers) == 1
                else f"= ANY({self.bind(numbers, 'numeric[]')})"
            )
            parts.append(
                f"CASE WHEN jsonb_typeof({c}) = 'number' THEN {c}::numeric {eq} ELSE FALSE END"
            )
        if strings:
            eq = (
                f"= {self.bind(strings[0], 'text')}"
                if len(strings) == 1
                else f"= ANY({self.bind(strings, 'text[]')})"
            )
            parts.append(f"(jsonb_typeof({c}) = 'string' AND {s} {eq})")
        for b in sorted(booleans):
            parts.append(f"{c} = '{b}'::jsonb")
        for kind, texts in temporals.items():
            norm = _temporal_sql(kind, s)
            parts.append(
                f"(jsonb_typeof({c}) = 'string' AND {norm} = ANY({self.bind(texts, 'text[]')}))"
            )
        if not parts:
            return "FALSE"
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def ordered(self, op: str, value: Scalar, c: str) -> str:
        if isinstance(value, bool):
            return "FALSE"
        if isinstance(value, int | float):
            if isinstance(value, float) and math.isnan(value):
                return "FALSE"
            x = self.bind(_number(value), "numeric")
            return (
                f"CASE WHEN jsonb_typeof({c}) = 'number' THEN {c}::numeric {op} {x} ELSE FALSE END"
            )
        s = f"({c} #>> '{{}}')"
        if isinstance(value, Temporal):
            x = self.bind(value.text, "text")
            norm = _temporal_sql(value.kind, s)
            return f"(jsonb_typeof({c}) = 'string' AND {norm} COLLATE \"C\" {op} {x})"
        return self.string_bound(op, value, c)

    def string_bound(self, op: str, value: str, c: str) -> str:
        """``c op value`` for strings, by code point (COLLATE "C" compares UTF-8 bytes)."""
        prefix = _nul_prefix(value)
        if prefix is not None:
            # A stored string x holds no NUL, so for v = p + NUL + ...: x < v iff x <= p,
            # x > v iff x > p.
            op, value = ("<=" if op in ("<", "<=") else ">"), prefix
        x = self.bind(value, "text")
        return f"(jsonb_typeof({c}) = 'string' AND ({c} #>> '{{}}') COLLATE \"C\" {op} {x})"

    def in_range(self, low: Scalar, high: Scalar, c: str) -> str:
        if isinstance(low, bool) or isinstance(high, bool):
            return "FALSE"
        if isinstance(low, Temporal) and isinstance(high, Temporal) and low.kind == high.kind:
            lo, hi = self.bind(low.text, "text"), self.bind(high.text, "text")
            norm = _temporal_sql(low.kind, f"({c} #>> '{{}}')")
            return f"(jsonb_typeof({c}) = 'string' AND {norm} COLLATE \"C\" BETWEEN {lo} AND {hi})"
        if isinstance(low, int | float) and isinstance(high, int | float):
            if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
                return "FALSE"
            lo, hi = self.bind(_number(low), "numeric"), self.bind(_number(high), "numeric")
            return (
                f"CASE WHEN jsonb_typeof({c}) = 'number'"
                f" THEN {c}::numeric BETWEEN {lo} AND {hi} ELSE FALSE END"
            )
        if isinstance(low, str) and isinstance(high, str):
            return f"({self.string_bound('>=', low, c)} AND {self.string_bound('<=', high, c)})"
        return "FALSE"


def to_postgres(
    node: QNode,
    doc_column: str = "e.doc",
    first_param: int = 1,
    *,
    index: GinIndex = "jsonb_path_ops",
) -> tuple[str, list]:
    """SQL true for the rows whose ``doc_column`` (jsonb, stored form) matches ``node``.

    Placeholders are ``$first_param``, ``$first_param + 1``, ...; the list holds their values
    (``str``, ``decimal.Decimal`` or lists of them), each cast in the SQL. ``doc_column`` is
    pasted into the SQL as is: pass a column name, never client text. ``index`` is the operator
    class of the GIN index on ``doc_column`` (None: there is none); it decides which prefilters
    the fragment carries (see the module doc). Raises ``BadRequestData`` for a regular
    expression PostgreSQL cannot evaluate like Python (see ``translate_regex``).
    """
    builder = _Builder(doc_column, first_param, index)
    sql = builder.node(node)
    return sql, builder.params


__all__ = ["GinIndex", "scope_to_postgres", "to_postgres", "translate_regex"]


def scope_to_postgres(
    node: ScopeNode, doc_column: str = "e.doc", first_param: int = 1
) -> tuple[str, list[str]]:
    """SQL true for the rows whose ``doc_column`` (jsonb, stored form) has scopes that satisfy
    the scope query (§4.19), as ``scope.evaluate_scope`` decides; placeholders from
    ``$first_param`` on, their text values in the list."""
    params: list[str] = []

    def sql(n: ScopeNode) -> str:
        if isinstance(n, ScopeTerm):
            if n.exact:
                params.append("/" + "/".join(n.levels))
                test = f"s.v = ${first_param + len(params) - 1}::text"
            else:
                params.append(scope_regex(n))
                test = f"s.v ~ ${first_param + len(params) - 1}::text"
            return (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements_text("
                f"CASE jsonb_typeof({doc_column} -> 'scope') WHEN 'array'"
                f" THEN {doc_column} -> 'scope' END) AS s(v) WHERE {test})"
            )
        joiner = " AND " if isinstance(n, ScopeAnd) else " OR "
        return "(" + joiner.join(sql(i) for i in n.items) + ")"

    return sql(node), params
