"""Scope queries, ``scopeQ`` (ETSI GS CIM 009 v1.8 §4.19): parser, tree, in-memory evaluator.

An entity's ``scope`` holds hierarchical scopes such as ``/Madrid/Gardens/ParqueNorte``. A scope
query is made of terms, combined with ``;`` (and, binding tighter) and ``,`` or ``|`` (or), and
parentheses::

    scopeQ  = or
    or      = and *(("," / "|") and)
    and     = primary *(";" primary)
    primary = "(" or ")" / term
    term    = "/#" / 1*("/" level) ["/#"]
    level   = "+" / 1*(any character but "/", "#", "+", "(", ")", ";", ",", "|", whitespace)

A term without wildcards matches that scope exactly; ``+`` stands for exactly one level
(``/Madrid/+/ParqueNorte``); a final ``/#`` for any number of further levels, none included
(``/CompanyA/#`` matches ``/CompanyA`` and everything below it), so ``/#`` alone matches any
scope. An entity matches a term when any of its scopes does; an entity without scope matches
none. A malformed scopeQ is 400 BadRequestData.

``evaluate_scope`` is the meaning; ``scope_regex`` gives each term as a regular expression that
Python's ``re`` (SQLite's ``regexp``) and PostgreSQL's ``~`` read alike, which the dialect
translations (``sqlite_q.scope_to_sqlite``, ``postgres_q.scope_to_postgres``) use; they are
property-tested against the evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

from cidade.ngsild.errors import BadRequestData

MAX_LENGTH = 2_000
MAX_DEPTH = 16
_LEVEL_END = frozenset("/#+();,|")


@dataclass(frozen=True, slots=True)
class ScopeTerm:
    """``/a/+/c`` is levels ("a", "+", "c"); ``deeper`` when it ends with ``/#``."""

    levels: tuple[str, ...]
    deeper: bool = False

    def matches(self, scope: str) -> bool:
        parts = scope[1:].split("/") if scope.startswith("/") else None
        if parts is None:
            return False
        n = len(self.levels)
        if len(parts) < n or (len(parts) > n and not self.deeper):
            return False
        return all(level in ("+", part) for level, part in zip(self.levels, parts, strict=False))

    @property
    def exact(self) -> bool:
        return not self.deeper and "+" not in self.levels


@dataclass(frozen=True, slots=True)
class ScopeAnd:
    items: tuple[ScopeNode, ...]


@dataclass(frozen=True, slots=True)
class ScopeOr:
    items: tuple[ScopeNode, ...]


ScopeNode: TypeAlias = ScopeTerm | ScopeAnd | ScopeOr


def evaluate_scope(node: ScopeNode, entity: dict[str, Any]) -> bool:
    """Whether a stored entity's scopes satisfy the scope query."""
    if isinstance(node, ScopeTerm):
        scopes = entity.get("scope")
        if not isinstance(scopes, list):
            return False
        return any(isinstance(s, str) and node.matches(s) for s in scopes)
    if isinstance(node, ScopeAnd):
        return all(evaluate_scope(item, entity) for item in node.items)
    return any(evaluate_scope(item, entity) for item in node.items)


def _escape(text: str) -> str:
    # Letters and digits as they are, every other character as a fixed-width hex escape: the one
    # escape syntax Python's re and PostgreSQL's advanced regular expressions share. Not \xhh:
    # PostgreSQL's \x takes every hex digit that follows ("a.b" would read as U+02EB).
    out = []
    for c in text:
        if c.isascii() and c.isalnum():
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


@lru_cache(maxsize=256)
def scope_regex(term: ScopeTerm) -> str:
    """The term as a regular expression a whole scope must match (anchored)."""
    body = "".join("/[^/]+" if level == "+" else "/" + _escape(level) for level in term.levels)
    return "^" + body + ("(/.*)?" if term.deeper else "") + "$"


def parse_scope_q(text: str) -> ScopeNode:
    """Parse a scopeQ; 400 BadRequestData for anything malformed."""
    if not isinstance(text, str) or not text:
        raise BadRequestData("scopeQ must not be empty")
    if len(text) > MAX_LENGTH:
        raise BadRequestData(f"scopeQ is longer than {MAX_LENGTH} characters")
    parser = _Parser(text)
    node = parser.parse_or(0)
    if parser.pos < len(text):
        raise parser.fail(f"unexpected {text[parser.pos]!r}")
    return node


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> BadRequestData:
        return BadRequestData(f"invalid scopeQ {self.text!r} at position {self.pos}: {message}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse_or(self, depth: int) -> ScopeNode:
        items = [self.parse_and(depth)]
        while self.peek() in (",", "|"):
            self.pos += 1
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else ScopeOr(tuple(items))

    def parse_and(self, depth: int) -> ScopeNode:
        items = [self.parse_primary(depth)]
        while self.peek() == ";":
            self.pos += 1
            items.append(self.parse_primary(depth))
        return items[0] if len(items) == 1 else ScopeAnd(tuple(items))

    def parse_primary(self, depth: int) -> ScopeNode:
        if self.peek() == "(":
            if depth >= MAX_DEPTH:
                raise self.fail(f"more than {MAX_DEPTH} nested parentheses")
            self.pos += 1
            node = self.parse_or(depth + 1)
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1
            return node
        return self.parse_term()

    def parse_term(self) -> ScopeTerm:
        if self.peek() != "/":
            raise self.fail("a scope starts with '/'")
        levels: list[str] = []
        while self.peek() == "/":
            self.pos += 1
            if self.peek() == "#":
                self.pos += 1
                if self.peek() not in ("", ")", ";", ",", "|"):
                    raise self.fail("'#' can only end a scope")
                return ScopeTerm(tuple(levels), deeper=True)
            if self.peek() == "+":
                self.pos += 1
                levels.append("+")
            else:
                start = self.pos
                while self.pos < len(self.text) and not (
                    self.text[self.pos] in _LEVEL_END or self.text[self.pos].isspace()
                ):
                    self.pos += 1
                if self.pos == start:
                    raise self.fail("a scope level is empty")
                levels.append(self.text[start : self.pos])
            if self.peek() not in ("", "/", ")", ";", ",", "|"):
                raise self.fail(f"unexpected {self.peek()!r} in a scope")
        return ScopeTerm(tuple(levels))


def render_scope_q(node: ScopeNode) -> str:
    """A tree back as scopeQ text (parse_scope_q(render_scope_q(t)) == t)."""
    if isinstance(node, ScopeTerm):
        text = "".join("/" + level for level in node.levels)
        return text + "/#" if node.deeper else text
    joiner = ";" if isinstance(node, ScopeAnd) else ","
    return joiner.join(
        f"({render_scope_q(i)})" if isinstance(i, ScopeOr | ScopeAnd) else render_scope_q(i)
        for i in node.items
    )


__all__ = [
    "ScopeAnd",
    "ScopeNode",
    "ScopeOr",
    "ScopeTerm",
    "evaluate_scope",
    "parse_scope_q",
    "render_scope_q",
    "scope_regex",
]
