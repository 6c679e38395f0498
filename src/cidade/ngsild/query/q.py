"""The NGSI-LD query language ``q`` (ETSI GS CIM 009 §4.9): parser, tree, renderer, evaluator.

``parse_q`` turns the text of a ``q`` parameter into a small tree of frozen dataclasses;
``evaluate`` decides whether one entity in the stored form (docs/stored-form.md) matches it;
``sqlite_q.to_sqlite`` translates the same tree to SQL that selects exactly the same entities.
``render_q`` writes a tree back as ``q`` text.

Syntax (§4.9 grammar, plus the extensions marked *)::

    q       = or
    or      = and *("|" and)              ; ";" (AND) binds tighter than "|" (OR), as §4.9 says
    and     = primary *(";" primary)
    primary = "(" or ")" / term           ; parentheses nest to any depth up to MAX_DEPTH
    term    = path                        ; existence
            / "!" path                    ; * non-existence (as Stellio accepts)
            / path op value
    path    = name *("." name) [bracket]  ; attribute, sub-attributes, then a trailing JSON path
    bracket = 1*("[" key *("." key) "]")  ; [a.b] as in §4.9; [a][b] is accepted* and means [a.b]
    op      = "==" / "!=" / ">" / ">=" / "<" / "<=" / "~=" / "!~="

* A name is a letter followed by letters, digits, ``_``, ``-``* or ``:``* (so prefixed names like
  ``ex:speed`` work); it is expanded with the caller's ``expand``. The last name of a path may be
  one of the instance members ``observedAt``, ``createdAt``, ``modifiedAt``, ``unitCode``,
  ``datasetId``, ``objectType``, which address that member of the instance instead of a
  sub-attribute, and are not expanded. Keys inside brackets are JSON member names of the value
  and are never expanded (values are opaque; see stored-form.md); they may also hold ``@``.
* Values: JSON numbers; ``"JSON strings"``; ``true``/``false``; DateTime
  (``2020-01-01T00:00:00Z``, fraction and ``±hh:mm`` offset optional), Date (``2020-01-01``) and
  Time (``12:00:00Z``) unquoted; URIs unquoted (``urn:ngsi-ld:Car:1`` — any ``scheme:...``
  without ``; | ( ) ,`` or spaces). ``==``/``!=`` also take value lists (``a==1,2,3``) and ranges
  (``a==1..10``, endpoints of one type). ``>``, ``>=``, ``<``, ``<=`` take one number, string or
  temporal value. ``~=``/``!~=`` take a quoted pattern or an unquoted one that ends at a top-level
  ``;``, ``|`` or ``)``.
* A bare word that is neither a URI nor ``true``/``false`` is an error (strings are quoted), except
  for attributes listed in ``expand_values`` (§4.9 ``expandValues``, EXAMPLE 12: ``gender==Male``),
  whose string values are expanded with ``expand_value`` (default: ``expand``).
* No whitespace is allowed outside quoted strings; URL-decoding is the caller's job.
* Linked-entity paths (``sensor{humidity}``, EXAMPLE 13/14) are not supported: 400.
* Every malformed ``q`` raises ``BadRequestData`` (400) whose detail names the 0-based position;
  ``parse_q`` raises nothing else for any input string (exceptions of ``expand`` itself pass). Limits: MAX_LENGTH characters, MAX_DEPTH
  nested parentheses, MAX_TERMS terms, MAX_PATTERN characters per regular expression.

Semantics (§4.9, "target element" / "target value"):

* A term addresses the instances of its attribute (all datasetIds). The entity matches when ANY
  instance matches (§4.9: "the target value shall be any Value of such instances").
* Sub-attribute names walk into the instance; an observedAt-like last name selects that member.
  Otherwise the target value is the instance's value member, by type: Property/GeoProperty
  ``value``, Relationship ``object``, LanguageProperty ``languageMap``, VocabProperty ``vocab``
  (stored expanded, so compare with the full IRI, or use ``expand_values``), ListProperty
  ``valueList``, ListRelationship ``objectList``, JsonProperty ``json``. The bracket path then
  walks JSON objects (not arrays); a member that is not there makes the target non-existent.
* LanguageProperty: with no bracket or ``[*]`` the candidates are every string of the languageMap
  (array values flattened); ``[en]`` selects one language.
* Candidates: a JSON array target gives its elements, anything else gives itself. A JSON-LD typed
  literal ``{"@value": v, ...}`` (as a target or as an array element) is compared as ``v``, except
  inside a JsonProperty, whose JSON is opaque. Arrays are flattened one level only.
* ``==``, ``>``, ``>=``, ``<``, ``<=``, ``~=`` match when ANY candidate matches.
  ``!=`` and ``!~=`` match when the target exists and NO candidate is equal (or, for ``!~=``, no
  candidate is a non-string or a string the pattern finds): §4.9 "is not included in the target
  value, if the latter is an array". On a missing attribute or path both give no match (§4.9: "A
  matching entity shall contain the target element"); use ``!attr`` for absence.
* Types never mix: numbers compare with numbers only, strings with strings, booleans only equal
  booleans (a number is never equal to the string of its digits). A value of another type is "not
  matching" for ``==`` and the ordering operators and "unequal" — so matching — for ``!=`` (§4.9:
  "If the data type of the target value and the data type of the Query Term value are different,
  then they shall be considered unequal").
* Temporal literals are compared temporally (§4.9): the q literal and every string candidate are
  normalized by ``temporal`` (DateTime → UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the hub's stored
  format; Date → ``YYYY-MM-DD``, also taken from a DateTime candidate's UTC date; Time →
  ``HH:MM:SS.ffffffZ``, also from a DateTime's UTC time). A string that is not such a value has
  another data type. Strings compare by code point (RFC 8259 §8.3), no collation.
* Relationship and ListRelationship targets only answer ``==`` and ``!=`` (including lists and
  ranges); any other operator does not match them (§4.9).
* ``~=`` uses Python ``re.search``: the pattern may match anywhere in the string (as POSIX
  regexec, which §4.9 cites, and as Orion-LD and Stellio do); anchor with ``^...$`` for a whole
  match. A non-string candidate never matches either pattern operator (§4.9). Invalid patterns
  are a 400 at parse time. Python's engine backtracks: pathological patterns cost CPU.
* Numbers compare as Python numbers (ints exactly); integers outside SQLite's 64-bit range are
  compared as floats in SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from operator import ge, gt, le, lt
from typing import Any, Literal, TypeAlias

from cidade.ngsild.errors import BadRequestData

MAX_LENGTH = 10_000
MAX_DEPTH = 32
MAX_TERMS = 128
MAX_PATTERN = 1_000

# Members of an instance that a path's last name can address (stored-form.md "optional members").
META_MEMBERS = frozenset(
    {"observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId", "objectType"}
)

# The value member of an instance, tried in this order (the stored form has exactly one).
KIND_VALUE, KIND_REL, KIND_LANG, KIND_JSON, KIND_META, KIND_LANG_ALL = range(6)
VALUE_MEMBERS: tuple[tuple[str, int], ...] = (
    ("value", KIND_VALUE),
    ("object", KIND_REL),
    ("languageMap", KIND_LANG),
    ("vocab", KIND_VALUE),
    ("valueList", KIND_VALUE),
    ("objectList", KIND_REL),
    ("json", KIND_JSON),
)

TemporalKind: TypeAlias = Literal["DateTime", "Date", "Time"]
CompareOp: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<="]


@dataclass(frozen=True, slots=True)
class Temporal:
    """A DateTime, Date or Time literal; ``text`` is normalized (see ``temporal``)."""

    kind: TemporalKind
    text: str


Scalar: TypeAlias = bool | int | float | str | Temporal


@dataclass(frozen=True, slots=True)
class Path:
    """What a term addresses: ``attr`` (IRI) → ``subs`` (IRIs) → ``meta`` member → ``keys``."""

    attr: str
    subs: tuple[str, ...] = ()
    meta: str | None = None
    keys: tuple[str, ...] = ()
    # The names as written (attr, subs, meta), for rendering and messages; not part of identity.
    names: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[QNode, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[QNode, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    path: Path


@dataclass(frozen=True, slots=True)
class NotExists:
    path: Path


@dataclass(frozen=True, slots=True)
class Compare:
    path: Path
    op: CompareOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class InList:
    """``path==v1,v2,...`` (any equal) or, negated, ``path!=v1,v2,...`` (none equal)."""

    path: Path
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """``path==low..high`` (both included) or, negated, ``path!=low..high``."""

    path: Path
    low: Scalar
    high: Scalar
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Pattern:
    """``path~=regex`` or, negated, ``path!~=regex``."""

    path: Path
    regex: str
    negated: bool = False


QNode: TypeAlias = And | Or | Exists | NotExists | Compare | InList | Range | Pattern
Term: TypeAlias = Compare | InList | Range | Pattern


# -- shared helpers (also used by sqlite_q) -----------------------------------------------------

compile_regex = lru_cache(maxsize=512)(re.compile)

_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z)?")


def _micro(fraction: str | None) -> int:
    return int((fraction or "")[:6].ljust(6, "0"))


def _norm_datetime(s: str) -> str | None:
    m = _DATETIME.fullmatch(s)
    if m is None:
        return None
    y, mo, d, h, mi, sec, frac, zone = m.groups()
    try:
        tz = UTC
        if zone and zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0), _micro(frac), tz)
        t = t.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # Formatted by hand: strftime("%Y") does not pad years below 1000 on every platform.
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T"
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"
    )


@lru_cache(maxsize=4096)
def _temporal(kind: str, s: str) -> str | None:
    if kind == "DateTime":
        return _norm_datetime(s)
    if kind == "Date":
        m = _DATE.fullmatch(s)
        if m is not None:
            try:
                datetime(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                return None
            return s
        dt = _norm_datetime(s)
        return None if dt is None else dt[:10]
    if kind == "Time":
        m = _TIME.fullmatch(s)
        if m is not None:
            h, mi, sec, frac = int(m[1]), int(m[2]), int(m[3] or 0), _micro(m[4])
            if h > 23 or mi > 59 or sec > 59:
                return None
            return f"{h:02d}:{mi:02d}:{sec:02d}.{frac:06d}Z"
        dt = _norm_datetime(s)
        return None if dt is None else dt[11:]
    return None


def temporal(kind: str, value: object) -> str | None:
    """``value`` normalized as a ``kind`` ("DateTime", "Date", "Time"), or None if it is not one.

    The one definition of temporal comparison: used for q literals, for candidates in
    ``evaluate``, and registered in SQLite as ``ngsi_temporal(kind, value)``.
    """
    if not isinstance(value, str) or not isinstance(kind, str):
        return None
    return _temporal(kind, value)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- parser -------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*")
_UNQUOTED_END = frozenset(";|(),")
_NAME_EXTRA = frozenset("_-:")
_KEY_EXTRA = frozenset("_-:@")
_BAD_IRI = re.compile(r'["\\\x00-\x1f\x7f]')
_OPERATORS = ("!~=", "!=", "==", "~=", ">=", "<=", ">", "<")


def _error(text: str, pos: int, message: str) -> BadRequestData:
    near = text[max(0, pos - 15) : pos + 15]
    return BadRequestData(f"invalid q at position {pos}: {message} (near {near!r})")


class _Parser:
    __slots__ = (
        "expand",
        "expand_value",
        "expand_values",
        "n",
        "pos",
        "terms",
        "text",
    )

    def __init__(
        self,
        text: str,
        expand: Callable[[str], str],
        expand_values: frozenset[str],
        expand_value: Callable[[str], str],
    ) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.terms = 0
        self.expand = expand
        self.expand_values = expand_values
        self.expand_value = expand_value

    def fail(self, message: str, pos: int | None = None) -> BadRequestData:
        return _error(self.text, self.pos if pos is None else pos, message)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""

    # q = or EOF
    def parse(self) -> QNode:
        node = self.parse_or(0)
        if self.pos < self.n:
            c = self.text[self.pos]
            if c == ")":
                raise self.fail("')' without a matching '('")
            raise self.fail(f"expected ';', '|' or the end of q, found {c!r}")
        return node

    def parse_or(self, depth: int) -> QNode:
        items = [self.parse_and(depth)]
        while self.peek() == "|":
            self.pos += 1
            items.append(self.parse_and(depth))
        return _join(Or, items)

    def parse_and(self, depth: int) -> QNode:
        items = [self.parse_primary(depth)]
        while self.peek() == ";":
            self.pos += 1
            items.append(self.parse_primary(depth))
        return _join(And, items)

    def parse_primary(self, depth: int) -> QNode:
        c = self.peek()
        if c == "(":
            if depth >= MAX_DEPTH:
                raise self.fail(f"more than {MAX_DEPTH} nested parentheses")
            open_at = self.pos
            self.pos += 1
            node = self.parse_or(depth + 1)
            if self.peek() != ")":
                if self.pos >= self.n:
                    raise self.fail("'(' is never closed", open_at)
                raise self.fail(f"expected ';', '|' or ')', found {self.peek()!r}")
            self.pos += 1
            return node
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.fail(f"more than {MAX_TERMS} query terms")
        if c == "!" and not self.text.startswith(("!=", "!~="), self.pos):
            self.pos += 1
            path = self.parse_path()
            if self.pos < self.n and self.text[self.pos] not in ";|)":
                raise self.fail("'!attr' tests absence and takes no operator or value")
            return NotExists(path)
        return self.parse_term()

    def parse_term(self) -> QNode:
        path = self.parse_path()
        if self.pos >= self.n or self.text[self.pos] in ";|)":
            return Exists(path)
        op_at = self.pos
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:
            c = self.text[self.pos]
            if c.isspace():
                raise self.fail("whitespace is not allowed outside quoted strings")
            if c == "=":
                raise self.fail("'=' is not an operator; use '=='")
            if c == "{":
                raise self.fail("linked-entity queries (attr{...}) are not supported")
            raise self.fail(f"expected an operator (==, !=, >, >=, <, <=, ~=, !~=), found {c!r}")
        self.pos += len(op)
        if self.pos >= self.n:
            raise self.fail(f"'{op}' needs a value")
        if op in ("~=", "!~="):
            return Pattern(path, self.parse_regex(), op == "!~=")
        expand = path.names[0] in self.expand_values or path.attr in self.expand_values
        items = [self.parse_value(expand)]
        if self.text.startswith("..", self.pos):
            low_at = op_at + len(op)
            self.pos += 2
            if self.pos >= self.n:
                raise self.fail("a range needs an upper bound")
            high_at = self.pos
            high = self.parse_value(expand)
            low = items[0]
            if op not in ("==", "!="):
                raise self.fail(f"a range only goes with '==' or '!=', not '{op}'", op_at)
            for at, v in ((low_at, low), (high_at, high)):
                if isinstance(v, bool) or (isinstance(v, str) and self.unquoted_at(at)):
                    raise self.fail("range bounds are numbers, quoted strings or temporal", at)
            if _value_class(low) != _value_class(high):
                raise self.fail("both bounds of a range must be of the same type", low_at)
            if self.peek() == ",":
                raise self.fail("a range cannot be part of a value list")
            return Range(path, low, high, op == "!=")
        while self.peek() == ",":
            self.pos += 1
            if self.pos >= self.n:
                raise self.fail("a value list cannot end with ','")
            items.append(self.parse_value(expand))
            if self.text.startswith("..", self.pos):
                raise self.fail("a range cannot be part of a value list")
        if len(items) > 1:
            if op not in ("==", "!="):
                raise self.fail(f"a value list only goes with '==' or '!=', not '{op}'", op_at)
            return InList(path, tuple(items), op == "!=")
        value = items[0]
        if op not in ("==", "!="):
            value_at = op_at + len(op)
            if isinstance(value, bool):
                raise self.fail(f"'{op}' does not compare booleans", value_at)
            if isinstance(value, str) and self.unquoted_at(value_at):
                raise self.fail(
                    f"'{op}' needs a number, a quoted string or a temporal value", value_at
                )
        return Compare(path, op, value)  # type: ignore[arg-type]

    def unquoted_at(self, pos: int) -> bool:
        return self.text[pos] != '"'

    # -- paths ---------------------------------------------------------------------------------

    def parse_name(self) -> str:
        start = self.pos
        text, n = self.text, self.n
        if start >= n or not text[start].isalpha():
            if start >= n:
                raise self.fail("expected an attribute name, found the end of q")
            c = text[start]
            if c.isspace():
                raise self.fail("whitespace is not allowed outside quoted strings")
            raise self.fail(f"expected an attribute name, found {c!r}")
        i = start + 1
        while i < n and (text[i].isalnum() or text[i] in _NAME_EXTRA):
            i += 1
        self.pos = i
        return text[start:i]

    def iri(self, name: str, at: int) -> str:
        iri = self.expand(name)
        if not isinstance(iri, str) or not iri or _BAD_IRI.search(iri):
            raise self.fail(f"attribute name {name!r} does not expand to a usable IRI", at)
        return iri

    def parse_path(self) -> Path:
        at = self.pos
        names = [self.parse_name()]
        attr = self.iri(names[0], at)
        subs: list[str] = []
        meta: str | None = None
        while self.peek() == ".":
            if meta is not None:
                raise self.fail(f"'{meta}' is an instance member and has no sub-attributes")
            self.pos += 1
            at = self.pos
            name = self.parse_name()
            names.append(name)
            if name in META_MEMBERS:
                meta = name
            else:
                subs.append(self.iri(name, at))
        keys: list[str] = []
        while self.peek() == "[":
            self.pos += 1
            while True:
                keys.append(self.parse_key())
                c = self.peek()
                if c == ".":
                    self.pos += 1
                    continue
                if c == "]":
                    self.pos += 1
                    break
                if not c:
                    raise self.fail("'[' is never closed")
                raise self.fail(f"expected '.' or ']' in a bracket path, found {c!r}")
        if self.peek() == ".":
            raise self.fail("a bracket path must come last; write attr.sub[key]")
        return Path(attr, tuple(subs), meta, tuple(keys), tuple(names))

    def parse_key(self) -> str:
        start = self.pos
        text, n = self.text, self.n
        if start < n and text[start] == "*":
            self.pos += 1
            return "*"
        i = start
        while i < n and (text[i].isalnum() or text[i] in _KEY_EXTRA):
            i += 1
        if i == start:
            found = repr(text[i]) if i < n else "the end of q"
            raise self.fail(f"expected a member name in the bracket path, found {found}")
        self.pos = i
        return text[start:i]

    # -- values --------------------------------------------------------------------------------

    def parse_value(self, expand: bool) -> Scalar:
        c = self.peek()
        if c == '"':
            s = self.parse_string()
            return self.expand_value(s) if expand else s
        if not (c == "-" or c.isalnum()):
            if c.isspace():
                raise self.fail("whitespace is not allowed outside quoted strings")
            raise self.fail("expected a value" + (f", found {c!r}" if c else ""))
        start = self.pos
        text, n = self.text, self.n
        numeric = c == "-" or "0" <= c <= "9"  # a number, date, time or date-time
        i = start
        while i < n and text[i] not in _UNQUOTED_END:
            if numeric and text.startswith("..", i):
                break  # a range: "1..5", "2020-01-01..2020-12-31"
            i += 1
        token = text[start:i]
        if not token:
            raise self.fail("expected a value" + (f", found {c!r}" if c else ""))
        if any(ch.isspace() for ch in token):
            raise self.fail("whitespace is not allowed outside quoted strings", start)
        self.pos = i
        if numeric:
            return self.classify_number_or_temporal(token, start)
        if token == "true":
            return True
        if token == "false":
            return False
        if expand:
            # expandValues (§4.9 EXAMPLE 12): the value is a term to expand, like "Male".
            if '"' in token or "\\" in token:
                raise self.fail(f"{token!r} is not a term or URI", start)
            return self.expand_value(token)
        if _URI.fullmatch(token) is None:
            raise self.fail(
                f"{token!r} is not a number, date, time, boolean or URI; quote strings",
                start,
            )
        return token

    def classify_number_or_temporal(self, token: str, start: int) -> Scalar:
        if _NUMBER.fullmatch(token):
            if "." in token or "e" in token or "E" in token:
                return float(token)
            try:
                return int(token)
            except ValueError:  # more digits than Python converts (sys.int_info)
                raise self.fail("number too long", start) from None
        kind: TemporalKind
        if "T" in token:
            kind = "DateTime"
        elif ":" in token:
            kind = "Time"
        elif token.count("-") == 2:
            kind = "Date"
        else:
            raise self.fail(f"{token!r} is not a number, date, time or date-time", start)
        normalized = temporal(kind, token)
        if normalized is None:
            raise self.fail(f"{token!r} is not a valid {kind}", start)
        return Temporal(kind, normalized)

    def parse_string(self) -> str:
        start = self.pos
        text, n = self.text, self.n
        i = start + 1
        while i < n:
            c = text[i]
            if c == '"':
                break
            i += 2 if c == "\\" else 1
        if i >= n:
            raise self.fail("unterminated string", start)
        self.pos = i + 1
        try:
            value = json.loads(text[start : i + 1])
        except json.JSONDecodeError as exc:
            raise self.fail(f"invalid string: {exc.msg}", start) from None
        if not isinstance(value, str) or any("\ud800" <= ch <= "\udfff" for ch in value):
            raise self.fail("invalid string (lone surrogate escape)", start)
        return value

    def parse_regex(self) -> str:
        start = self.pos
        if self.peek() == '"':
            pattern = self.parse_string()
        else:
            # Unquoted: up to a top-level ';', '|' or ')'. Parentheses of the pattern itself
            # must balance, and '\' escapes the next character.
            text, n = self.text, self.n
            i, depth = start, 0
            while i < n:
                c = text[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif c in ";|" and depth == 0:
                    break
                i += 1
            i = min(i, n)
            pattern = text[start:i]
            self.pos = i
            if not pattern:
                raise self.fail("'~=' needs a pattern")
        if len(pattern) > MAX_PATTERN:
            raise self.fail(f"pattern longer than {MAX_PATTERN} characters", start)
        try:
            compile_regex(pattern)
        except re.error as exc:
            raise self.fail(f"invalid regular expression: {exc}", start) from None
        except (RecursionError, OverflowError, ValueError, MemoryError):
            raise self.fail("regular expression too complex", start) from None
        return pattern


def _value_class(value: Scalar) -> object:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return float
    if isinstance(value, Temporal):
        return value.kind
    return str


def _join(cls: type[And] | type[Or], items: list[QNode]) -> QNode:
    if len(items) == 1:
        return items[0]
    flat: list[QNode] = []
    for item in items:
        if isinstance(item, cls):
            flat.extend(item.items)
        else:
            flat.append(item)
    return cls(tuple(flat))


def parse_q(
    text: str,
    expand: Callable[[str], str],
    *,
    expand_values: Iterable[str] = (),
    expand_value: Callable[[str], str] | None = None,
) -> QNode:
    """Parse a (URL-decoded) ``q``; attribute names are expanded with ``expand``.

    ``expand_values`` names the attributes of §4.9 ``expandValues``: their string values are
    expanded with ``expand_value`` (default ``expand``). Raises ``BadRequestData`` for any
    malformed input, with the position in the detail.
    """
    if not isinstance(text, str):
        raise BadRequestData("q must be a string")
    if not text:
        raise BadRequestData("invalid q: it is empty")
    if len(text) > MAX_LENGTH:
        raise BadRequestData(f"invalid q: longer than {MAX_LENGTH} characters")
    names = frozenset(expand_values)
    if names:
        names = names | frozenset(expand(n) for n in names)
    return _Parser(text, expand, names, expand_value or expand).parse()


# -- renderer -----------------------------------------------------------------------------------


def _render_scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN cannot be written in q; nothing equals it anyway
            return '"NaN"'
        if value in (float("inf"), float("-inf")):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, Temporal):
        return value.text
    return json.dumps(value, ensure_ascii=False)


def render_path(path: Path) -> str:
    text = ".".join(path.names)
    if path.keys:
        text += "[" + ".".join(path.keys) + "]"
    return text


def render_q(node: QNode) -> str:
    """Write a tree as ``q`` text (compact names as parsed); ``parse_q`` reads it back equal."""
    if isinstance(node, Or):
        return "|".join(render_q(item) for item in node.items)
    if isinstance(node, And):
        return ";".join(
            f"({render_q(item)})" if isinstance(item, Or) else render_q(item) for item in node.items
        )
    if isinstance(node, Exists):
        return render_path(node.path)
    if isinstance(node, NotExists):
        return "!" + render_path(node.path)
    path = render_path(node.path)
    if isinstance(node, Compare):
        return f"{path}{node.op}{_render_scalar(node.value)}"
    if isinstance(node, InList):
        op = "!=" if node.negated else "=="
        return path + op + ",".join(_render_scalar(v) for v in node.values)
    if isinstance(node, Range):
        op = "!=" if node.negated else "=="
        return f"{path}{op}{_render_scalar(node.low)}..{_render_scalar(node.high)}"
    if isinstance(node, Pattern):
        op = "!~=" if node.negated else "~="
        return path + op + json.dumps(node.regex, ensure_ascii=False)
    raise TypeError(f"not a q node: {node!r}")


# -- evaluator ----------------------------------------------------------------------------------


def _instances(entity: dict, path: Path) -> Iterator[dict]:
    """The dicts a path's attribute and sub-attribute names lead to, one per instance."""
    attrs = entity.get("attrs")
    if not isinstance(attrs, dict):
        return
    instances = attrs.get(path.attr)
    if not isinstance(instances, list):
        return
    for inst in instances:
        node = inst
        if not isinstance(node, dict):
            continue
        for sub in path.subs:
            node = node.get(sub)
            if not isinstance(node, dict):
                break
        else:
            yield node


def resolve(node: dict, path: Path) -> tuple[int, Any] | None:
    """(kind, target value) of one instance, or None when the target does not exist."""
    if path.meta is not None:
        if path.meta not in node:
            return None
        kind, target = KIND_META, node[path.meta]
    else:
        for member, member_kind in VALUE_MEMBERS:
            if member in node:
                kind, target = member_kind, node[member]
                break
        else:
            return None
        if kind == KIND_LANG and (not path.keys or path.keys == ("*",)):
            return KIND_LANG_ALL, target
    for key in path.keys:
        if not isinstance(target, dict) or key not in target:
            return None
        target = target[key]
    return kind, target


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    return value


def candidates(kind: int, target: Any) -> list[Any]:
    """The values a term compares: array elements or the target itself (see module doc)."""
    if kind == KIND_LANG_ALL:
        out: list[Any] = []
        if isinstance(target, dict):
            for v in target.values():
                if isinstance(v, list):
                    out.extend(v)
                else:
                    out.append(v)
        return out
    if kind == KIND_JSON:
        return target if isinstance(target, list) else [target]
    if isinstance(target, list):
        return [_unwrap(v) for v in target]
    return [_unwrap(target)]


def _equals(value: Scalar) -> Callable[[Any], bool]:
    if isinstance(value, bool):
        return lambda c: c is value
    if isinstance(value, int | float):
        return lambda c: is_number(c) and c == value
    if isinstance(value, Temporal):
        kind, text = value.kind, value.text
        return lambda c: isinstance(c, str) and _temporal(kind, c) == text
    return lambda c: isinstance(c, str) and c == value


def _in_list(values: tuple[Scalar, ...]) -> Callable[[Any], bool]:
    # Sets, so that a long list costs one lookup per candidate. The type checks come first:
    # True == 1 and hash(True) == hash(1), so `True in {1}` would hold.
    numbers = frozenset(v for v in values if is_number(v))
    strings = frozenset(v for v in values if isinstance(v, str))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    temporals = [
        (k, frozenset(v.text for v in values if isinstance(v, Temporal) and v.kind == k))
        for k in ("DateTime", "Date", "Time")
    ]
    temporals = [(k, texts) for k, texts in temporals if texts]

    def test(c: Any) -> bool:
        if isinstance(c, bool):
            return c in booleans
        if isinstance(c, int | float):
            return c in numbers
        if isinstance(c, str):
            if c in strings:
                return True
            for kind, texts in temporals:
                if _temporal(kind, c) in texts:
                    return True
        return False

    return test


_ORDER = {">": gt, ">=": ge, "<": lt, "<=": le}


def _ordered(op: str, value: Scalar) -> Callable[[Any], bool]:
    cmp = _ORDER[op]
    if isinstance(value, bool):
        return lambda c: False
    if isinstance(value, int | float):
        return lambda c: is_number(c) and cmp(c, value)
    if isinstance(value, Temporal):
        kind, text = value.kind, value.text

        def temporal_cmp(c: Any) -> bool:
            if not isinstance(c, str):
                return False
            t = _temporal(kind, c)
            return t is not None and cmp(t, text)

        return temporal_cmp
    return lambda c: isinstance(c, str) and cmp(c, value)


def _in_range(low: Scalar, high: Scalar) -> Callable[[Any], bool]:
    if isinstance(low, bool) or isinstance(high, bool) or _value_class(low) != _value_class(high):
        return lambda c: False
    if isinstance(low, Temporal) and isinstance(high, Temporal):
        kind, lo, hi = low.kind, low.text, high.text

        def temporal_in(c: Any) -> bool:
            if not isinstance(c, str):
                return False
            t = _temporal(kind, c)
            return t is not None and lo <= t <= hi

        return temporal_in
    if isinstance(low, int | float):
        return lambda c: is_number(c) and low <= c <= high  # type: ignore[operator]
    return lambda c: isinstance(c, str) and low <= c <= high  # type: ignore[operator]


def term_test(term: Term) -> tuple[bool, Callable[[Any], bool]]:
    """(negative, predicate). Positive terms need a candidate satisfying the predicate; negative
    ones (``!=``, ``!~=``) need an existing target with no candidate satisfying it."""
    if isinstance(term, Compare):
        if term.op == "==":
            return False, _equals(term.value)
        if term.op == "!=":
            return True, _equals(term.value)
        return False, _ordered(term.op, term.value)
    if isinstance(term, InList):
        return term.negated, _in_list(term.values)
    if isinstance(term, Range):
        return term.negated, _in_range(term.low, term.high)
    rx = compile_regex(term.regex)
    if term.negated:
        return True, lambda c: not isinstance(c, str) or rx.search(c) is not None
    return False, lambda c: isinstance(c, str) and rx.search(c) is not None


def relationship_allowed(term: Term) -> bool:
    """§4.9: Relationship targets only answer equal and unequal."""
    if isinstance(term, Pattern):
        return False
    return not isinstance(term, Compare) or term.op in ("==", "!=")


def _exists(path: Path, entity: dict) -> bool:
    bare = path.meta is None and not path.keys
    return any(bare or resolve(node, path) is not None for node in _instances(entity, path))


# Compiled predicates per term object, so that evaluating a tree again (a subscription, the next
# entity) builds nothing. Keyed by identity, not equality: Compare(p, "==", 1) equals
# Compare(p, "==", True) as dataclasses (True == 1), but they are different tests.
_TESTS: dict[int, tuple[Term, bool, Callable[[Any], bool]]] = {}
_TESTS_MAX = 4096


def _compiled_test(term: Term) -> tuple[bool, Callable[[Any], bool]]:
    hit = _TESTS.get(id(term))
    if hit is not None and hit[0] is term:
        return hit[1], hit[2]
    negative, test = term_test(term)
    if len(_TESTS) >= _TESTS_MAX:
        _TESTS.clear()
    _TESTS[id(term)] = (term, negative, test)  # holding the term keeps its id from being reused
    return negative, test


def _match_term(term: Term, entity: dict) -> bool:
    negative, test = _compiled_test(term)
    rel_ok = relationship_allowed(term)
    path = term.path
    for node in _instances(entity, path):
        found = resolve(node, path)
        if found is None:
            continue
        kind, target = found
        if kind == KIND_REL and not rel_ok:
            continue
        hit = False
        for c in candidates(kind, target):
            if test(c):
                hit = True
                break
        if hit != negative:
            return True
    return False


def evaluate(node: QNode, entity: dict) -> bool:
    """Does ``entity`` (stored form) match ``node``?"""
    cls = node.__class__
    if cls is And:
        return all(evaluate(item, entity) for item in node.items)  # type: ignore[union-attr]
    if cls is Or:
        return any(evaluate(item, entity) for item in node.items)  # type: ignore[union-attr]
    if cls is Exists:
        return _exists(node.path, entity)  # type: ignore[union-attr]
    if cls is NotExists:
        return not _exists(node.path, entity)  # type: ignore[union-attr]
    return _match_term(node, entity)  # type: ignore[arg-type]


__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_PATTERN",
    "MAX_TERMS",
    "META_MEMBERS",
    "And",
    "Compare",
    "Exists",
    "InList",
    "NotExists",
    "Or",
    "Path",
    "Pattern",
    "QNode",
    "Range",
    "Scalar",
    "Temporal",
    "compile_regex",
    "evaluate",
    "parse_q",
    "render_q",
    "temporal",
]
