"""Context source registration operations (ETSI GS CIM 009 v1.8 §5.9 Context Source
Registration, §5.10 Context Source Discovery): register, update, delete, retrieve and query the
registrations of a tenant. No HTTP here: ``registrations_api.py`` binds these operations to
§6.8 and §6.9; the data type itself is ``registrations.py``. Every change is one store
transaction that also enqueues the notifications of the subscriptions to registrations it
concerns (``notify/csource.py``). Requests are not forwarded to the registered context sources
(a later step): these are the registrations themselves.
"""

from __future__ import annotations

from typing import Any

from cidade.hub.model import Terms, check_entity_id, expand_name, is_uri
from cidade.hub.notify.csource import match_registration
from cidade.hub.querying import compile_pattern
from cidade.hub.registrations import (
    RegistrationFilter,
    check_geoproperty,
    merge_registration,
    normalize_registration,
    parse_time_filter,
    render_registration,
)
from cidade.ngsild import timefmt
from cidade.ngsild.errors import AlreadyExists, BadRequestData, ResourceNotFound
from cidade.ngsild.query.geo import parse_geoquery
from cidade.ngsild.query.q import QNode, parse_q
from cidade.ngsild.query.types import parse_type_expression
from cidade.store.base import Store


def check_registration_id(reg_id: str) -> str:
    """The id of a registration named by a request; 400 when it is not a URI."""
    if not is_uri(reg_id):
        raise BadRequestData(f"registration id {reg_id!r} is not a URI")
    return reg_id


def registration_filter(
    terms: Terms,
    *,
    ids: list[str] | None = None,
    id_pattern: str | None = None,
    type_text: str | None = None,
    attrs: list[str] | None = None,
    q: str | None = None,
    csf: str | None = None,
    georel: str | None = None,
    geometry: str | None = None,
    coordinates: Any = None,
    geoproperty: str | None = None,
    timerel: str | None = None,
    time_at: str | None = None,
    end_time_at: str | None = None,
    timeproperty: str | None = None,
) -> RegistrationFilter:
    """§5.10.2 Query Context Source Registrations: the request's filters, names expanded with
    ``terms``; 400 for an invalid one, or when nothing selects (no entity id, type or id
    pattern, no attribute, no query: the specification asks at least one)."""

    def name_iri(name: str) -> str:
        return expand_name(name, terms)

    def type_iri(name: str) -> str:
        return expand_name(name, terms, "entity type")

    for i in ids or ():
        check_entity_id(i, "an entity id of the query")
    pattern = compile_pattern(id_pattern) if id_pattern else None
    types = parse_type_expression(type_text, type_iri) if type_text else None
    names = tuple(dict.fromkeys(name_iri(a) for a in attrs or ()))
    q_node: QNode | None = parse_q(q, name_iri) if q else None
    csf_node: QNode | None = parse_q(csf, name_iri) if csf else None
    geo = parse_geoquery(georel, geometry, coordinates, geoproperty, name_iri)
    check_geoproperty(geo)
    time = parse_time_filter(timerel, time_at, end_time_at, timeproperty)
    if not (ids or pattern or types or names or q_node or csf_node or geo or time):
        raise BadRequestData(
            "a query of registrations needs at least one of: type, attrs, id, idPattern, q,"
            " csf, a geo-query or a temporal query"
        )
    return RegistrationFilter(
        ids=tuple(ids or ()),
        id_pattern=pattern,
        types=types,
        attrs=names,
        q=q_node,
        csf=csf_node,
        geo=geo,
        time=time,
    )


class RegistrationService:
    """The context source registrations of every tenant of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, tenant: str, body: object, terms: Terms) -> str:
        """§5.9.2 Register Context Source: its id; 409 AlreadyExists when the id is taken."""
        reg = normalize_registration(body, terms, timefmt.now())

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is not None:
                raise AlreadyExists(f"registration {reg['id']} already exists")
            return reg

        await self.store.write_registration(tenant, reg["id"], apply, match_registration)
        return reg["id"]

    async def retrieve(
        self, tenant: str, reg_id: str, terms: Terms, *, sys_attrs: bool = False
    ) -> dict[str, Any]:
        """§5.10.1 Retrieve Context Source Registration, as the client sees it."""
        reg = await self.store.get_registration(tenant, check_registration_id(reg_id))
        if reg is None:
            raise ResourceNotFound(f"registration {reg_id} not found")
        return render_registration(reg, terms, sys_attrs=sys_attrs)

    async def query(
        self,
        tenant: str,
        flt: RegistrationFilter,
        terms: Terms,
        *,
        limit: int,
        offset: int,
        sys_attrs: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """§5.10.2 Query Context Source Registrations: one page of those ``flt`` selects, in
        creation order, and how many there are."""
        now = timefmt.now()
        found = [r for r in await self.store.list_registrations(tenant) if flt.matches(r, now)]
        page = found[offset : offset + limit]
        return [render_registration(r, terms, sys_attrs=sys_attrs) for r in page], len(found)

    async def update(self, tenant: str, reg_id: str, patch: object, terms: Terms) -> None:
        """§5.9.3 Update Context Source Registration: the members of ``patch`` replace the
        stored ones (a null removes one)."""
        check_registration_id(reg_id)
        if not isinstance(patch, dict):
            raise BadRequestData("a registration fragment must be a JSON object")
        now = timefmt.now()

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise ResourceNotFound(f"registration {reg_id} not found")
            return merge_registration(current, patch, terms, now)

        await self.store.write_registration(tenant, reg_id, apply, match_registration)

    async def delete(self, tenant: str, reg_id: str) -> None:
        """§5.9.4 Delete Context Source Registration."""
        check_registration_id(reg_id)

        def apply(current: dict[str, Any] | None) -> None:
            if current is None:
                raise ResourceNotFound(f"registration {reg_id} not found")
            return None

        await self.store.write_registration(tenant, reg_id, apply, match_registration)


__all__ = ["RegistrationService", "check_registration_id", "registration_filter"]
