"""ASGI middleware every route goes through."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cidade.http.responses import problem_response
from cidade.ngsild.errors import BadRequestData, NgsiError

# How a middleware answers an error before any route runs: (scope, error) -> an ASGI response.
# ProblemDetails by default; the app gives one that answers in an API's own envelope where that
# API has one (Open311).
ErrorAnswer = Callable[[Any, NgsiError], Any]


def _problem(scope: Any, error: NgsiError) -> Any:
    return problem_response(error)


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

    def __init__(self, app: Any, answer: ErrorAnswer = _problem) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            # NUL can be stored by neither PostgreSQL text nor jsonb: refuse it at the door
            # rather than let it reach a store as a 500.
            if b"%00" in query or "\x00" in scope.get("path", ""):
                error = BadRequestData("the URL may not contain the NUL character (%00)")
                await self.answer(scope, error)(scope, receive, send)
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
                # One slash: a path ending in two has an empty segment still (EmptySegments).
                scope = {**scope, "path": path[:-1] or "/"}
                if raw is not None:
                    scope["raw_path"] = raw[:-1] or b"/"
        await self.app(scope, receive, send)


class EmptySegments:
    """ASGI middleware: in an NGSI-LD path (``prefix``), an empty segment stands where an id or
    a name was left out (``/entities//attrs``, ``/attrs//{instanceId}``, ``/subscriptions//``):
    400 BadRequestData whatever the method, not a 405 or a 404 that depends on which route the
    rest of the path happens to match. So is ``/entities/attrs`` (and its temporal twin): entity
    ids are URIs, so ``attrs`` there is the attribute collection of an entity whose id is
    missing. The path is read as the client sent it (``raw_path``), so an id with an encoded
    ``//`` is untouched, and a literal one after a URI scheme (``http://``, in an id sent
    unencoded) is not an empty segment. Runs after TrailingSlash."""

    def __init__(self, app: Any, prefix: str = "/ngsi-ld/") -> None:
        self.app = app
        self.prefix = prefix.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("raw_path") or scope.get("path", "").encode()
            if raw.startswith(self.prefix):
                problem = _missing_segment(raw[len(self.prefix) :].split(b"/"))
                if problem is not None:
                    await problem_response(BadRequestData(problem))(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _missing_segment(segments: list[bytes]) -> str | None:
    for n, segment in enumerate(segments):
        if not segment and not (n > 0 and segments[n - 1].endswith(b":")):
            return "the path has an empty segment: an id or a name is missing"
    # v1/entities/attrs..., v1/temporal/entities/attrs...
    at = (
        2
        if segments[1:2] == [b"entities"]
        else 3
        if segments[1:3] == [b"temporal", b"entities"]
        else 0
    )
    if at and segments[at : at + 1] == [b"attrs"]:
        return "the entity id is missing before /attrs"
    return None
