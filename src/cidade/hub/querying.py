"""Query Entities (§5.7.2) and the POST /entityOperations/query body (§5.2.23 Query) turned into
one ``EntityQuery`` for the store, whichever way the query arrived."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cidade.hub.model import check_entity_id, expand_name
from cidade.ngsild.errors import BadRequestData, NotImplementedFeature
from cidade.ngsild.query.geo import parse_geoquery
from cidade.ngsild.query.order import parse_collation, parse_order_by
from cidade.ngsild.query.q import parse_q
from cidade.ngsild.query.scope import parse_scope_q
from cidade.ngsild.query.types import parse_type_expression
from cidade.store.base import EntityQuery
from cidade.store.history import SCOPE

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
    scope_q: str | None = None,
    georel: str | None = None,
    geometry: str | None = None,
    coordinates: Any = None,
    geoproperty: str | None = None,
    order_by: object = None,
    collation: object = None,
    limit: int = 20,
    offset: int = 0,
    count: bool = False,
    require_filter: bool = True,
    ids_suffice: bool = True,
) -> EntityQuery:
    query = EntityQuery(limit=limit, offset=offset, count=count)

    def name_iri(name: str) -> str:
        return expand_name(name, terms)

    if ids:
        for i in ids:
            check_entity_id(i, "an entity id of the query")
        query.ids = ids
    if id_pattern:
        query.id_pattern = compile_pattern(id_pattern)
    if type_text:
        query.types = parse_type_expression(type_text, _type_iri(terms))
    if attrs:
        query.attrs = attribute_names(terms, attrs)
    if q:
        query.q = parse_q(q, name_iri)
    if scope_q is not None:
        if not isinstance(scope_q, str):
            raise BadRequestData("scopeQ must be a string")
        query.scope = parse_scope_q(scope_q)
    query.geo = parse_geoquery(georel, geometry, coordinates, geoproperty, name_iri)
    if order_by is not None:
        query.order = parse_order_by(order_by, name_iri)
    if collation is not None:
        query.collation = parse_collation(collation)
    ids = ids_suffice and bool(query.ids or query.id_pattern)
    if require_filter and not (ids or query.types or query.attrs or query.q or query.geo):
        # §5.7.2.4: Query Entities needs an entity type selector, attribute names, a query, a
        # geo-query or local=true; ids or an id pattern alone are not enough there.
        raise BadRequestData(
            "a query needs at least one of: type, attrs, q, a geo-query, local=true"
            + ("" if not ids_suffice else ", id, idPattern")
        )
    return query


def query_from_body(
    terms: Any,
    body: object,
    *,
    limit: int,
    offset: int,
    count: bool,
    require_filter: bool = True,
    ids_suffice: bool = True,
) -> EntityQuery:
    """A §5.2.23 Query object (the body of POST /entityOperations/query and of POST
    /temporal/entityOperations/query) as one EntityQuery; ``require_filter`` and
    ``ids_suffice`` as for build_query."""
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise BadRequestData('the body must be a Query object ("type": "Query")')
    ids, patterns, types = _entity_selectors(body.get("entities"))
    geo_q = body.get("geoQ") or {}
    if not isinstance(geo_q, dict):
        raise BadRequestData("geoQ must be an object")
    attrs = body.get("attrs") or []
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        raise BadRequestData("attrs must be an array of attribute names")
    q = body.get("q")
    if q is not None and not isinstance(q, str):
        raise BadRequestData("q must be a string")
    order_by, collation = _ordering(body.get("ordering"))
    return build_query(
        terms,
        ids=ids,
        id_pattern=patterns,
        type_text=types,
        attrs=attrs,
        q=q,
        scope_q=body.get("scopeQ"),
        georel=geo_q.get("georel"),
        geometry=geo_q.get("geometry"),
        coordinates=geo_q.get("coordinates"),
        geoproperty=geo_q.get("geoproperty"),
        order_by=order_by,
        collation=collation,
        limit=limit,
        offset=offset,
        count=count,
        require_filter=require_filter,
        ids_suffice=ids_suffice,
    )


def _ordering(ordering: object) -> tuple[object, object]:
    """orderBy and collation of a Query's ``ordering`` (§5.2.43 OrderingParams), None without
    one; order by distance (coordinates, geometry) is not supported (501)."""
    if ordering is None:
        return None, None
    if not isinstance(ordering, dict):
        raise BadRequestData("ordering must be an OrderingParams object")
    for member in ("coordinates", "geometry"):
        if member in ordering:
            raise NotImplementedFeature(f"ordering.{member} (order by distance) is not supported")
    if ordering.get("orderBy") is None:
        raise BadRequestData("ordering needs orderBy")
    return ordering["orderBy"], ordering.get("collation")


def _entity_selectors(
    selectors: object,
) -> tuple[list[str] | None, str | None, str | None]:
    """The `entities` member of a Query: [{id?, idPattern?, type}] -> ids, pattern, types."""
    if selectors is None:
        return None, None, None
    if not isinstance(selectors, list) or not all(isinstance(s, dict) for s in selectors):
        raise BadRequestData("entities must be an array of EntitySelector objects")
    ids: list[str] = []
    patterns: list[str] = []
    types: list[str] = []
    for sel in selectors:
        if "type" not in sel or not isinstance(sel["type"], str):
            raise BadRequestData("every EntitySelector needs a type")
        types.append(sel["type"])
        if "id" in sel:
            ids.append(sel["id"])
        if "idPattern" in sel:
            patterns.append(sel["idPattern"])
    pattern = "|".join(f"(?:{p})" for p in patterns) if patterns else None
    type_text = ",".join(f"({t})" for t in types)
    return ids or None, pattern, type_text


# Members of every entity that are not attributes (§4.5.1): they cannot be named in attrs.
CORE_MEMBERS = frozenset({"id", "type", "@id", "@type", "scope", "@context"})


def attribute_names(terms: Any, names: list[str]) -> list[str]:
    """The expanded IRIs of attribute names (attrs); 400 for a name that is not one."""
    out = []
    for name in names:
        if name in CORE_MEMBERS:
            raise BadRequestData(f"{name!r} is an entity member, not an attribute name (use pick)")
        out.append(expand_name(name, terms))
    return out


def projection(terms: Any, names: list[str]) -> list[str]:
    return [RESERVED_PROJECTION.get(n) or expand_name(n, terms) for n in names]


@dataclass(frozen=True)
class Members:
    """Which top-level members of an entity a response shows: those ``attrs`` names, or those
    ``pick`` keeps and ``omit`` leaves out (§4.21). Attributes are expanded IRIs; the core
    members are "id", "type" and "scope" themselves."""

    attrs: tuple[str, ...] = ()
    pick: frozenset[str] | None = None
    omit: frozenset[str] = frozenset()
    # datasetId (§4.5.5): only the attribute instances with one of these datasetIds, "@none"
    # for the default instance; empty: every instance.
    dataset_ids: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.attrs and self.pick is None and not self.omit

    def shows(self, member: str) -> bool:
        """Whether a member (an attribute IRI, or id, type, scope) is shown."""
        if member in self.omit:
            return False
        if self.pick is not None:
            return member in self.pick
        if self.attrs and member not in RESERVED_PROJECTION:
            return member in self.attrs
        return True

    def attributes(self) -> list[str] | None:
        """The attributes named, to read only those: [] when every attribute may be shown, None
        when none is (a pick of core members only)."""
        if self.attrs:
            return list(self.attrs)
        if self.pick is not None:
            named = [m for m in self.pick if m not in RESERVED_PROJECTION]
            if "scope" in self.pick:
                named.append(SCOPE)  # the scope's history is kept as an attribute's
            return named or None
        return []


def members(
    terms: Any,
    attrs: list[str],
    pick: list[str],
    omit: list[str],
    dataset_ids: Sequence[str] = (),
) -> Members:
    """attrs, pick and omit of a request, checked together (§4.21): pick and omit never name
    the same member, and neither comes with attrs, which they replace; and datasetId (§4.5.5),
    each a URI or "@none"."""
    if attrs and (pick or omit):
        raise BadRequestData("attrs cannot be combined with pick or omit")
    picked = frozenset(projection(terms, pick)) if pick else None
    omitted = frozenset(projection(terms, omit))
    if picked is not None and picked & omitted:
        raise BadRequestData("pick and omit cannot name the same member")
    for dataset in dataset_ids:
        if dataset != "@none":
            check_entity_id(dataset, "a datasetId of the query")
    return Members(tuple(projection(terms, attrs)), picked, omitted, tuple(dataset_ids))


def _type_iri(terms: Any) -> Any:
    def expand(name: str) -> str:
        return expand_name(name, terms, "entity type")

    return expand
