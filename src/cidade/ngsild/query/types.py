"""Entity type selection (ETSI GS CIM 009 v1.8 §4.17): ``A,B`` and ``A|B`` mean or, ``A;B`` and,
with parentheses; ``;`` binds tighter. Names are expanded with the request's @context."""

from __future__ import annotations

import re
from collections.abc import Callable

from cidade.ngsild.errors import BadRequestData

TypeExpr = str | tuple[str, list["TypeExpr"]]
_TOKEN = re.compile(r"\s*([(),;|]|[^(),;|\s]+)")
_NAME = re.compile(r"^[^<>\"'=()\[\]{}\\^`]+$")


def parse_type_expression(text: str, expand: Callable[[str], str]) -> TypeExpr:
    if not text or len(text) > 4000:
        raise BadRequestData("the type selection is empty or too long")
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        return tok

    def or_expr(depth: int) -> TypeExpr:
        parts = [and_expr(depth)]
        while peek() in (",", "|"):
            take()
            parts.append(and_expr(depth))
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(depth: int) -> TypeExpr:
        parts = [atom(depth)]
        while peek() == ";":
            take()
            parts.append(atom(depth))
        return parts[0] if len(parts) == 1 else ("and", parts)

    def atom(depth: int) -> TypeExpr:
        if depth > 32:
            raise BadRequestData("the type selection is nested too deeply")
        tok = peek()
        if tok is None:
            raise BadRequestData(f"type selection {text!r} ends too early")
        if tok == "(":
            take()
            inner = or_expr(depth + 1)
            if peek() != ")":
                raise BadRequestData(f"type selection {text!r}: missing ')'")
            take()
            return inner
        if tok in (")", ",", "|", ";"):
            raise BadRequestData(f"type selection {text!r}: unexpected {tok!r}")
        take()
        if not _NAME.match(tok):
            raise BadRequestData(f"invalid entity type {tok!r}")
        return expand(tok)

    expr = or_expr(0)
    if pos != len(tokens):
        raise BadRequestData(f"type selection {text!r}: unexpected {tokens[pos]!r}")
    return expr


def _tokens(text: str) -> list[str]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def type_matches(expr: TypeExpr, types: list[str]) -> bool:
    if isinstance(expr, str):
        return expr in types
    op, parts = expr
    if op == "and":
        return all(type_matches(p, types) for p in parts)
    return any(type_matches(p, types) for p in parts)
