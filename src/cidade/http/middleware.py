"""ASGI middleware every route goes through."""

from __future__ import annotations

from typing import Any

from cidade.http.responses import problem_response
from cidade.ngsild.errors import BadRequestData


class LiteralPlus:
    """ASGI middleware: a '+' in a query string is a plus sign (RFC 3986), not a space (the HTML
    forms convention Starlette follows). NGSI-LD values like ``2026-01-01T10:00:00+01:00`` in
    ``q`` depend on it; a space is sent as %20."""

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
                scope = {**scope, "query_string": query.replace(b"+", b"%2B")}
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
