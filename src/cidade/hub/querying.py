"""Query Entities (§5.7.2) and the POST /entityOperations/query body (§5.2.23 Query) turned into
one ``EntityQuery`` for the store, whichever way the query arrived."""

from __future__ import annotations

import re
from typing import Any

from cidade.hub.model import check_name
from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.geo import parse_geoquery
from cidade.ngsild.query.q import parse_q
from cidade.ngsild.query.types import parse_type_expression
from cidade.store.base import EntityQuery

RESERVED_PROJECTION = {"id": "id", "type": "type", "scope": "scope"}


def compile_pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise BadRequestData(
            f"idPattern {pattern!r} is not a valid regular expression: {exc}"
        ) from None
    return pattern


def build_query(
    terms: Any,
    *,
    ids: list[str] | None = None,
    id_pattern: str | None = None,
    type_text: str | None = None,
    attrs: list[str] | None = None,
    q: str | None = None,
    georel: str | None = None,
    geometry: str | None = None,
    coordinates: Any = None,
    geoproperty: str | None = None,
    limit: int = 20,
    offset: int = 0,
    count: bool = False,
    require_filter: bool = True,
) -> EntityQuery:
    query = EntityQuery(limit=limit, offset=offset, count=count)
    if ids:
        for i in ids:
            if not isinstance(i, str) or ":" not in i:
                raise BadRequestData(f"entity id {i!r} is not a URI")
        query.ids = ids
    if id_pattern:
        query.id_pattern = compile_pattern(id_pattern)
    if type_text:
        query.types = parse_type_expression(type_text, terms.expand)
    if attrs:
        query.attrs = [terms.expand(check_name(a)) for a in attrs]
    if q:
        query.q = parse_q(q, terms.expand)
    query.geo = parse_geoquery(georel, geometry, coordinates, geoproperty, terms.expand)
    if require_filter and not (
        query.ids or query.id_pattern or query.types or query.attrs or query.q or query.geo
    ):
        # §6.4.3.2: a query needs at least one of type, id, attrs, q, geo (or local=true).
        raise BadRequestData(
            "a query needs at least one of: type, id, idPattern, attrs, q, a geo-query, local=true"
        )
    return query


def projection(terms: Any, names: list[str]) -> list[str]:
    return [RESERVED_PROJECTION.get(n) or terms.expand(check_name(n)) for n in names]
