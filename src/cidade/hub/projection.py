"""The attribute projection language of ``pick`` and ``omit`` (ETSI GS CIM 009 v1.8 §4.21).

A projection names entity members (``id``, ``type``, ``scope``, attributes) separated by ``,``
or ``|``; a member followed by braces names, for a relationship, the members of the entities it
links to (linked entity retrieval, §4.5.23), to any depth::

    pick=id,locatedAt{id,name,isInCountry{description}}
    omit=type,locatedAt{name}

In ``pick`` every member named is kept (``locatedAt`` above is kept, and of the City it links
to only ``id`` and ``name``). In ``omit`` only the members named without braces are left out:
``locatedAt{name}`` keeps ``locatedAt`` and leaves ``name`` out of the City. Any malformed
expression (an empty one, a character that no name may hold, a separator first, last or next to
another, a brace that is never closed or holds nothing) is 400 BadRequestData.
"""

from __future__ import annotations

from typing import Any

from cidade.hub.model import Projection, expand_name
from cidade.ngsild.errors import BadRequestData

# Entity members that are not attributes: never expanded.
RESERVED_MEMBERS = frozenset({"id", "type", "scope"})
_SEPARATORS = frozenset(",|")
_SPECIAL = frozenset(",|{}")


Parsed = list[tuple[str, "Parsed | None"]]  # (name, nested members or None), as written


def parse_projection(text: str, terms: Any, *, omit: bool) -> Projection:
    """A ``pick`` (``omit=False``) or ``omit`` parameter as a Projection; 400 when malformed."""
    what = "omit" if omit else "pick"
    return _build(_Parser(text.replace(" ", ""), what).parse(), terms, omit)


def _build(parsed: Parsed, terms: Any, omit: bool) -> Projection:
    members: set[str] = set()
    linked: dict[str, Projection] = {}
    for name, nested in parsed:
        iri = name if name in RESERVED_MEMBERS else expand_name(name, terms)
        if nested is not None:
            linked[iri] = _build(nested, terms, omit)
        if nested is None or not omit:
            members.add(iri)
    return Projection(frozenset(members), linked)


class _Parser:
    __slots__ = ("n", "pos", "text", "what")

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.what = what

    def fail(self, message: str) -> BadRequestData:
        return BadRequestData(f"invalid {self.what} {self.text!r}: {message}")

    def parse(self) -> Parsed:
        if not self.text:
            raise self.fail("it names no member")
        bad = sorted({c for c in self.text if c not in _SPECIAL and not _name_char(c)})
        if bad:
            raise self.fail(f"characters not allowed: {''.join(bad)}")
        items = self.parse_list(nested=False)
        if self.pos < self.n:
            raise self.fail(f"unexpected {self.text[self.pos]!r} at position {self.pos}")
        return items

    def parse_list(self, *, nested: bool) -> Parsed:
        items: Parsed = []
        while True:
            items.append(self.parse_member())
            if self.pos >= self.n:
                break
            c = self.text[self.pos]
            if c in _SEPARATORS:
                self.pos += 1
                if self.pos >= self.n:
                    raise self.fail("it ends with a separator")
                if self.text[self.pos] in _SEPARATORS:
                    raise self.fail("two separators in a row")
                continue
            if c == "}" and nested:
                break
            raise self.fail(f"unexpected {c!r} at position {self.pos}")
        return items

    def parse_member(self) -> tuple[str, Parsed | None]:
        start = self.pos
        while self.pos < self.n and self.text[self.pos] not in _SPECIAL:
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            found = repr(self.text[start]) if start < self.n else "the end"
            raise self.fail(f"a member name is missing before {found} at position {start}")
        if self.pos < self.n and self.text[self.pos] == "{":
            open_at = self.pos
            self.pos += 1
            if self.pos < self.n and self.text[self.pos] == "}":
                raise self.fail(f"the braces after {name!r} hold no member")
            nested = self.parse_list(nested=True)
            if self.pos >= self.n or self.text[self.pos] != "}":
                raise self.fail(f"the brace at position {open_at} is never closed")
            self.pos += 1
            return name, nested
        return name, None


def _name_char(c: str) -> bool:
    # What an attribute name may hold (model.expand_name), plus ':' and '/' of prefixes and IRIs.
    return c.isalnum() or c in "_-:/.#@~"
