"""ASGI middleware every route goes through."""

from __future__ import annotations

import re
from typing import Any

from cidade.http.responses import problem_response
from cidade.ngsild.errors import BadRequestData

# A '+' between a time of day and a two-digit UTC offset (``10:00:00+01:00``, ':' raw or as %3A):
# the one place where a client that did not encode its URL meant a plus sign.
_OFFSET_PLUS = re.compile(
    rb"([0-9]{2}(?::|%3[Aa])[0-9]{2}(?:(?::|%3[Aa])[0-9]{2}(?:\.[0-9]+)?)?)\+([0-9]{2})"
)


class LiteralPlus:
    """ASGI middleware: a '+' in a query string is a space, as every form encoder (Python's
    requests, JavaScript's URLSearchParams, Java's URLEncoder, ...) writes it and Starlette reads
    it, except between a time and its UTC offset: ``q=t.observedAt>2026-01-01T10:00:00+01:00``
    typed into a URL by hand keeps its '+' (a space is never valid there). Encoders send a plus
    sign as %2B."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            # NUL can be stored by neither PostgreSQL text nor jsonb: refuse it at the door
            # rather than let it reach a store as a 500.
            if b"%00" in query or "\x00" in scope.get("path", ""):
                error = BadRequestData("the URL may not contain the NUL character (%00)")
                await problem_response(error)(scope, receive, send)
                return
            if b"+" in query:
                fixed = _OFFSET_PLUS.sub(rb"\1%2B\2", query)
                if fixed != query:
                    scope = {**scope, "query_string": fixed}
        await self.app(scope, receive, send)


class TrailingSlash:
    """ASGI middleware: a path with a trailing slash names the same resource as without it.
    The NGSI-LD specification writes resource paths with one (``/subscriptions/``) and clients
    copy them; routed as written, ``/subscriptions/`` would be ``/subscriptions/{id}`` with an
    empty id. Only a literal '/' goes: an id that ends in an encoded one (%2F) keeps it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope.get("path", "")
            raw: bytes | None = scope.get("raw_path")
            if len(path) > 1 and path.endswith("/") and (raw is None or raw.endswith(b"/")):
                scope = {**scope, "path": path.rstrip("/") or "/"}
                if raw is not None:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
