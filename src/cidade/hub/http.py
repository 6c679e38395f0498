"""The HTTP side of NGSI-LD: media types, @context from the request, bodies, responses (§6.3)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.gate import grant_of
from cidade.http.bodies import GEO_JSON, JSON, JSON_LD, MERGE_PATCH
from cidade.http.responses import JsonBytes
from cidade.hub.jsonld import (
    CORE_CONTEXT_URL,
    ContextResolver,
    TermMap,
    parse_link_header,
    resolve_references,
)
from cidade.ngsild.errors import (
    BadRequestData,
    InvalidRequest,
    NgsiError,
    NotAcceptable,
    NotImplementedFeature,
    TooManyResults,
)

LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
TENANT_HEADER = "ngsild-tenant"
# A merge-patch body takes its @context as a JSON body does (from the Link header).
MERGE_PATCH_AS_JSON = {MERGE_PATCH: JSON}


@dataclass(slots=True)
class Ctx:
    """The @context a request uses: its term map, and how to tell the client in the response."""

    terms: TermMap
    link: str | None  # the context URL from the Link header, when there was one
    body_context: Any = None  # the @context member of a JSON-LD body

    def response_context(self) -> Any:
        if self.link:
            return self.link
        if self.body_context is not None:
            return self.body_context
        return CORE_CONTEXT_URL


def tenant_of(request: Request) -> str:
    """The request's tenant as the gate read, checked and authorised it (NGSILD-Tenant, or
    Fiware-Service as FIWARE tools name it): handlers never read the header again."""
    return grant_of(request).tenant


async def context_for_body(
    resolver: ContextResolver, request: Request, body: Any, kind: str
) -> Ctx:
    """§6.3.5: JSON bodies take @context from the Link header; JSON-LD bodies from @context."""
    link_header = request.headers.get("link")
    body_context = None
    if isinstance(body, dict):
        body_context = body.get("@context")
        if body_context is None and "@context" in body:
            # Read as "no @context" it slipped past the media type rules (a @context member with
            # application/json is 400) and would reset the context to nothing.
            raise BadRequestData("the @context member must be a URL, an object or an array")
    ctx_kind = MERGE_PATCH_AS_JSON.get(kind, kind)
    if body_context is not None and ctx_kind == JSON_LD:
        body_context = resolve_references(body_context, str(request.url))
    terms = await resolver.request_context(ctx_kind, link_header, body_context)
    link = parse_link_header(link_header) if link_header and ctx_kind == JSON else None
    return Ctx(terms, link, body_context if ctx_kind == JSON_LD else None)


async def contexts_for_batch(
    resolver: ContextResolver, request: Request, items: list[Any], kind: str
) -> list[TermMap | NgsiError]:
    """§6.3.5 for a batch, entity by entity: in a JSON-LD batch each entity carries its own
    @context; in a JSON (or merge-patch) one they all take the Link header's, and an entity
    with a @context member is refused. An entity whose @context is missing, malformed or not
    available fails alone (its error goes in the BatchOperationResult, §5.2.16); a Link header
    that fails, or one with application/ld+json, fails the request."""
    ctx_kind = MERGE_PATCH_AS_JSON.get(kind, kind)
    link_header = request.headers.get("link")
    if ctx_kind != JSON_LD:
        shared = await resolver.request_context(ctx_kind, link_header, None)
        misplaced = BadRequestData(
            "an @context member in the body requires Content-Type application/ld+json"
        )
        return [misplaced if isinstance(e, dict) and "@context" in e else shared for e in items]
    if parse_link_header(link_header) is not None:
        # The request's own header, not an entity's @context: the request is wrong (§6.3.5).
        raise BadRequestData(
            "a JSON-LD context Link header is not allowed with Content-Type "
            "application/ld+json: each entity carries its @context"
        )
    # Entities of one batch mostly share their @context: each distinct one is resolved once,
    # a failing one too (not fetched again for every entity that names it).
    resolved: dict[bytes, TermMap | NgsiError] = {}
    out: list[TermMap | NgsiError] = []
    for item in items:
        context = item.get("@context") if isinstance(item, dict) else None
        key = orjson.dumps(context)
        found = resolved.get(key)
        if found is None:
            try:
                found = await resolver.request_context(JSON_LD, link_header, context)
            except NgsiError as exc:
                found = exc
            resolved[key] = found
        out.append(found)
    return out


async def context_for_read(resolver: ContextResolver, request: Request) -> Ctx:
    link_header = request.headers.get("link")
    terms = await resolver.request_context("", link_header, None)
    link = parse_link_header(link_header) if link_header else None
    return Ctx(terms, link)


def accepted(request: Request, *, geo: bool = True) -> str:
    """The response media type from the Accept header (§6.3.6)."""
    header = request.headers.get("accept", "")
    if not header:
        return JSON
    best, best_q = None, -1.0
    for part in header.split(","):
        fields = part.strip().split(";")
        kind = fields[0].strip().lower()
        q = 1.0
        for f in fields[1:]:
            f = f.strip()
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if kind in ("*/*", "application/*", JSON):
            cand = JSON
        elif kind == JSON_LD:
            cand = JSON_LD
        elif kind == GEO_JSON and geo:
            cand = GEO_JSON
        else:
            continue
        if q > best_q and q > 0:
            best, best_q = cand, q
    if best is None:
        raise NotAcceptable(f"cannot answer with any of: {header}")
    return best


def json_response(
    body: Any,
    *,
    status: int = 200,
    kind: str = JSON,
    ctx: Ctx | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A response in ``kind``: JSON-LD bodies carry @context, JSON ones a Link header to it,
    GeoJSON ones (a Feature or FeatureCollection) an @context member at the top (§6.3.15)."""
    out_headers = dict(headers or {})
    if ctx is not None:
        context = ctx.response_context()
        if kind == JSON_LD:
            if isinstance(body, list):
                body = [{**item, "@context": context} for item in body]
            elif isinstance(body, dict):
                body = {**body, "@context": context}
        elif kind == GEO_JSON and isinstance(body, dict):
            body = {**body, "@context": context}
        elif isinstance(context, str):
            link = f"<{context}>; {LINK_REL}"
            # Beside page links (page_links), if any: one Link header, comma-separated.
            out_headers["Link"] = (
                f"{link}, {out_headers['Link']}" if "Link" in out_headers else link
            )
    return JsonBytes(orjson.dumps(body), status, kind, out_headers)


# Far beyond any real result set, and far enough below 2^63 that offset + limit still fits the
# 64-bit integers SQLite and PostgreSQL bind: a larger offset is refused, not an overflow (500).
MAX_OFFSET = 2**62


def page_params(request: Request, *, default: int, maximum: int) -> tuple[int, int, bool]:
    params = request.query_params
    limit = _int_param(params.get("limit"), "limit", default)
    offset = _int_param(params.get("offset"), "offset", 0)
    if limit < 0 or offset < 0:
        raise BadRequestData("limit and offset must not be negative")
    if offset > MAX_OFFSET:
        raise BadRequestData(f"offset {offset} is above the maximum of {MAX_OFFSET}")
    if limit > maximum:
        raise TooManyResults(f"limit {limit} is above this broker's maximum of {maximum}")
    count = params.get("count", "false").lower()
    if count not in ("true", "false"):
        raise BadRequestData("count must be true or false")
    return limit, offset, count == "true"


def page_links(request: Request, limit: int, offset: int, total: int) -> dict[str, str]:
    """§5.5.9 pagination: a Link header to the previous and next pages (``rel="prev"``,
    ``rel="next"``) of a result of ``total`` items, the request's other parameters kept; no
    header for a page that has neither."""
    if limit <= 0:
        return {}
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]
    path = request.url.path
    links = []
    if offset > 0:
        links.append((max(0, offset - limit), "prev"))
    if offset + limit < total:
        links.append((offset + limit, "next"))
    if not links:
        return {}
    text = []
    for at, rel in links:
        query = urllib.parse.urlencode([*params, ("limit", limit), ("offset", at)])
        text.append(f'<{path}?{query}>;rel="{rel}";type="{JSON_LD}"')
    return {"Link": ",".join(text)}


def page_headers(
    request: Request, limit: int, offset: int, total: int, *, count: bool
) -> dict[str, str]:
    """The headers of a page of ``total`` results: its Link to the previous and next pages
    (``page_links``), and NGSILD-Results-Count when the request asks for ``count``."""
    headers = page_links(request, limit, offset, total)
    if count:
        headers["NGSILD-Results-Count"] = str(total)
    return headers


def created(collection: str, resource_id: str) -> Response:
    """201 Created, Location ``collection``/id: the id percent-encoded, as it may hold any
    character a URI allows and a header only latin-1."""
    location = f"{collection}/{urllib.parse.quote(resource_id, safe=':')}"
    return Response(status_code=201, headers={"Location": location})


def _int_param(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequestData(f"{name} must be an integer, got {value!r}") from None


def list_param(request: Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(v for v in raw.split(",") if v)
    return values


OPTIONS = frozenset(
    {
        "keyValues",
        "simplified",
        "concise",
        "normalized",
        "sysAttrs",
        "noOverwrite",
        "replace",
        "update",
    }
)
# The representations (§4.5) by the names format and options give them.
FORMS = {
    "keyValues": "keyValues",
    "simplified": "keyValues",
    "concise": "concise",
    "normalized": "normalized",
}


def options_param(request: Request) -> set[str]:
    """The ``options`` values; an unknown one is 400 InvalidRequest (§6.3.7: invalid options)."""
    opts = set(list_param(request, "options"))
    unknown = opts - OPTIONS
    if unknown:
        # §6.3.20: a parameter's value the operation does not define, as an unknown parameter.
        raise InvalidRequest(f"unknown options: {', '.join(sorted(unknown))}")
    return opts


def representation(request: Request) -> str:
    """normalized | concise | keyValues, from ``format`` (1.8; it wins over options) or
    ``options`` (older). An unknown format is 400 InvalidRequest."""
    fmt = request.query_params.get("format")
    opts = options_param(request)
    if fmt is not None:
        if fmt not in FORMS:
            raise InvalidRequest(f"unknown format {fmt!r}")
        return FORMS[fmt]
    forms = {FORMS[o] for o in opts if o in FORMS}
    if len(forms) > 1:
        raise BadRequestData(f"options {', '.join(sorted(opts & FORMS.keys()))} cannot be combined")
    return next(iter(forms), "normalized")


# Query parameters of later NGSI-LD versions or optional features this broker does not offer yet:
# refusing them (501) is better than silently answering as if they were not there.
UNSUPPORTED_PARAMS = (
    "scopeQ",
    "join",
    "joinLevel",
    "datasetId",
    "csf",
    "entityMap",
    "containedBy",
    "expandValues",
    "orderFrom",
    "orderGeometry",
    "doNotCompact",
)


def reject_unsupported(request: Request, allowed: tuple[str, ...] = ()) -> None:
    if not request.scope.get("query_string"):
        return
    for name in UNSUPPORTED_PARAMS:
        if name not in allowed and name in request.query_params:
            raise NotImplementedFeature(f"the query parameter {name} is not supported")
